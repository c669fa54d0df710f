"""Hock-Schittkowski problems of sif2jax as flat-vector problems, and their scoring.

Shared by `benchmarks/cutest.py` and `tests/test_cutest_smoke.py`. The set and its
conventions replicate ../shared/anchors/README.md (how the peers were run):

- problems: `sif2jax.constrained_minimisation_problems` whose class name starts with
  "HS", with n <= 50 and a stored `expected_objective_value` (97 problems);
- variables: the flattened `y0` pytree; `args` = the problem's `args`;
- constraints: sif2jax states inequalities as c(x) >= 0; here they are negated to the
  c(x) <= 0 convention of jconstrain (`HSProblem.ineq`); bounds stay bounds;
- scoring: solved = max violation (equalities, inequalities and bounds) <= 1e-6 and
  f <= f_ref + 1e-5 * max(1, |f_ref|), f and the violation evaluated here at the
  returned point, with f_ref from `hs_reference.json` of the anchors.

`import sif2jax` takes a minute (its package init instantiates every problem of the
collection). `load_problems` therefore by default imports only the HS problem modules
it needs, reading the problem list from sif2jax's own `__init__` files with `ast`
(the modules are loaded under temporary stand-in parent packages that are removed
from `sys.modules` again afterwards); `full_import=True`, or any failure of that fast
path, falls back to the plain `import sif2jax`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import sys
import types
from typing import Any, Callable

import numpy as np

# The anchors live in ../shared/anchors beside the repository (override with JCONSTRAIN_ANCHORS).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANCHORS_DIR = os.environ.get("JCONSTRAIN_ANCHORS", os.path.join(os.path.dirname(_REPO), "shared", "anchors"))
REFERENCE_FILE = os.path.join(ANCHORS_DIR, "hs_reference.json")

VIOL_TOL = 1e-6
F_TOL = 1e-5
MAX_N = 50


# --------------------------------------------------------------------------- problems


@dataclasses.dataclass
class HSProblem:
    """One HS problem on a flat float64 vector x (jconstrain's conventions).

    `objective(x)`, `eq(x)` (== 0) and `ineq(x)` (<= 0, the negated sif2jax
    inequalities) are plain JAX functions of the flat vector; `eq`/`ineq` return (0,)
    arrays when the problem has none. `lower`/`upper` are numpy (n,) arrays with ±inf
    where unbounded; `has_bounds` says whether any bound is finite.
    """

    name: str
    n: int
    meq: int
    min: int
    x0: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    objective: Callable[[Any], Any]
    eq: Callable[[Any], Any]
    ineq: Callable[[Any], Any]
    fstar: float  # sif2jax's stored optimum
    f_ref: float | None  # the anchors' reference objective (None when not listed)
    source: Any = None  # the sif2jax problem instance

    @property
    def has_bounds(self) -> bool:
        return bool(np.any(np.isfinite(self.lower)) or np.any(np.isfinite(self.upper)))

    def jc_problem(self):
        """The problem as a `jc.Problem` over the flat vector (bounds native)."""
        import jconstrain as jc

        objective, eq, ineq = self.objective, self.eq, self.ineq
        return jc.Problem(
            objective=lambda x, args: objective(x),
            eq=(lambda x, args: eq(x)) if self.meq else None,
            ineq=(lambda x, args: ineq(x)) if self.min else None,
            bounds=(self.lower, self.upper) if self.has_bounds else None,
        )


def _flat(tree) -> Any:
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    if tree is None:
        return jnp.zeros((0,), jnp.float64)
    leaves = [jnp.ravel(jnp.asarray(leaf, jnp.float64)) for leaf in _leaves(tree)]
    if not leaves:
        return jnp.zeros((0,), jnp.float64)
    return ravel_pytree(leaves)[0]


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def wrap(p, f_ref: float | None = None) -> HSProblem:
    """An `HSProblem` from a sif2jax problem instance `p`."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    if not jax.config.jax_enable_x64:
        raise RuntimeError("enable float64 first: jax.config.update('jax_enable_x64', True)")
    y0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p.y0)
    x0, unravel = ravel_pytree(y0)
    args = p.args

    def objective(x):
        return jnp.asarray(p.objective(unravel(x), args), jnp.float64).reshape(())

    def eq(x):
        return _flat(p.constraint(unravel(x))[0])

    def ineq(x):
        return -_flat(p.constraint(unravel(x))[1])

    eq0, ineq0 = jax.eval_shape(eq, x0), jax.eval_shape(ineq, x0)
    n = int(x0.size)
    lower = np.full(n, -np.inf)
    upper = np.full(n, np.inf)
    if p.bounds is not None:
        lo, hi = p.bounds
        if lo is not None:
            lower = np.broadcast_to(np.asarray(_flat(lo)), (n,)).astype(np.float64).copy()
        if hi is not None:
            upper = np.broadcast_to(np.asarray(_flat(hi)), (n,)).astype(np.float64).copy()
    return HSProblem(
        name=type(p).__name__,
        n=n,
        meq=int(eq0.size),
        min=int(ineq0.size),
        x0=np.asarray(x0, np.float64),
        lower=lower,
        upper=upper,
        objective=objective,
        eq=eq,
        ineq=ineq,
        fstar=float(np.asarray(p.expected_objective_value)),
        f_ref=f_ref,
        source=p,
    )


def load_reference(path: str = REFERENCE_FILE) -> dict[str, float]:
    """name -> f_ref from the anchors' hs_reference.json (empty if the file is absent)."""
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        data = json.load(fh)
    return {name: float(entry["f_ref"]) for name, entry in data.items()}


def _sif2jax_dir() -> str:
    spec = importlib.util.find_spec("sif2jax")
    if spec is None or spec.origin is None:
        raise ImportError("sif2jax is not installed")
    return os.path.dirname(spec.origin)


def _parse_package(init_file: str, tuple_name: str) -> tuple[list[str], dict[str, str]]:
    """From a sif2jax problem package's __init__: the class names in `tuple_name`
    (in order, commented-out entries excluded) and class name -> submodule."""
    with open(init_file) as fh:
        tree = ast.parse(fh.read())
    modules: dict[str, str] = {}
    order: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                modules[alias.asname or alias.name] = node.module
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if tuple_name in targets and isinstance(node.value, (ast.Tuple, ast.List)):
            for elt in node.value.elts:
                if isinstance(elt, ast.Call) and isinstance(elt.func, ast.Name) and not elt.args:
                    order.append(elt.func.id)
                else:
                    raise ValueError(f"unexpected entry in {tuple_name}: {ast.dump(elt)}")
    if not order:
        raise ValueError(f"{tuple_name} not found in {init_file}")
    return order, modules


def _fast_instances(select: Callable[[str], bool]) -> list:
    """HS problem instances without running sif2jax's package init (see module doc)."""
    return _import_instances(_constrained_plan(select, unique=False))


def _full_instances(select: Callable[[str], bool]) -> list:
    import sif2jax

    return [p for p in sif2jax.constrained_minimisation_problems if select(type(p).__name__)]


def load_problems(
    names: list[str] | None = None,
    max_n: int = MAX_N,
    limit: int | None = None,
    full_import: bool = False,
    reference: dict[str, float] | None = None,
) -> list[HSProblem]:
    """The HS problems (n <= max_n, stored optimum), in sif2jax's order.

    Args:
        names: restrict to these names (case-insensitive); unknown names raise.
        max_n: largest number of variables.
        limit: keep the first `limit` problems only.
        full_import: use `import sif2jax` (slow) instead of the fast module loader.
        reference: name -> f_ref (default: the anchors' hs_reference.json).
    """
    wanted = None if names is None else {s.strip().upper() for s in names if s.strip()}

    def select(cls: str) -> bool:
        return cls.startswith("HS") and (wanted is None or cls.upper() in wanted)

    if "sif2jax" in sys.modules and hasattr(sys.modules["sif2jax"], "constrained_minimisation_problems"):
        full_import = True  # already paid for: use it
    instances = None
    if not full_import:
        try:
            instances = _fast_instances(select)
        except Exception as err:  # pragma: no cover - depends on sif2jax's layout
            print(f"[hs] fast sif2jax loader failed ({err!r}); importing sif2jax", file=sys.stderr)
    if instances is None:
        instances = _full_instances(select)

    reference = load_reference() if reference is None else reference
    if not reference:
        print(
            f"[hs] no reference objectives ({REFERENCE_FILE} missing): scoring against "
            "sif2jax's stored optima instead",
            file=sys.stderr,
        )
    out: list[HSProblem] = []
    seen: set[str] = set()
    for p in instances:
        name = type(p).__name__
        if name in seen or p.expected_objective_value is None:
            continue
        problem = wrap(p, reference.get(name) if reference else None)
        if not reference:
            problem.f_ref = problem.fstar
        if problem.n > max_n:
            continue
        seen.add(name)
        out.append(problem)
    if wanted is not None:
        missing = wanted - {p.name.upper() for p in out}
        if missing:
            raise ValueError(
                f"unknown or excluded HS problems: {sorted(missing)} (the set is the "
                f"sif2jax constrained HS problems with n <= {max_n} and a stored optimum)"
            )
    if limit is not None:
        out = out[:limit]
    return out


# --------------------------------------------------------------------------- any constrained problem
# Additive helpers for benchmarks/robustness.py: every sif2jax constrained problem (not
# only HS), its size n from a cache, and `wrap` for problems without a stored optimum.

_CONSTRAINED_PACKAGES = (
    ("cutest._constrained_minimisation", "constrained_minimisation_problems"),
    ("cutest._quadratic_problems", "constrained_quadratic_problems"),
)


def _constrained_plan(select: Callable[[str], bool] = lambda cls: True, unique: bool = True) -> list[tuple[str, str]]:
    """(module below sif2jax, class name) of the classes in
    `sif2jax.constrained_minimisation_problems` (constrained + constrained quadratic) with
    `select(name)` true, in sif2jax's order; with `unique`, a class listed twice once."""
    root = _sif2jax_dir()
    plan, seen = [], set()
    for package, tuple_name in _CONSTRAINED_PACKAGES:
        order, modules = _parse_package(os.path.join(root, *package.split("."), "__init__.py"), tuple_name)
        for cls in order:
            if select(cls) and not (unique and cls in seen):
                seen.add(cls)
                plan.append((f"{package}.{modules[cls]}", cls))
    return plan


def _import_instances(plan: list[tuple[str, str]], on_error: Callable[[str, BaseException], None] | None = None) -> list:
    """Instances of the planned classes under stand-in parent packages (see the module
    doc), the stand-in `sif2jax` also exporting the abstract classes that some modules
    import from it. A class whose import or construction raises is passed to `on_error` (then
    skipped) or re-raised when `on_error` is None."""
    root = _sif2jax_dir()
    before = set(sys.modules)
    stubs = ["sif2jax", "sif2jax.cutest"] + [f"sif2jax.{pkg}" for pkg, _ in _CONSTRAINED_PACKAGES]
    try:
        for name in stubs:
            module = types.ModuleType(name)
            module.__path__ = [os.path.join(root, *name.split(".")[1:])]
            module.__package__ = name
            sys.modules[name] = module
        top = sys.modules["sif2jax"]
        for name, value in vars(importlib.import_module("sif2jax._problem")).items():
            if name.startswith("Abstract"):
                setattr(top, name, value)
        instances = []
        for module_name, cls in plan:
            try:
                instances.append(getattr(importlib.import_module(f"sif2jax.{module_name}"), cls)())
            except Exception as err:
                if on_error is None:
                    raise
                on_error(cls, err)
        return instances
    finally:
        for name in set(sys.modules) - before:
            if name == "sif2jax" or name.startswith("sif2jax."):
                del sys.modules[name]


def problem_size(p) -> int:
    """n of a sif2jax problem instance: the size of its flattened y0."""
    return int(sum(np.size(leaf) for leaf in _leaves(p.y0)))


def constrained_sizes(cache_dir: str | None = None, refresh: bool = False, full_import: bool = False) -> dict[str, dict]:
    """class name -> {"module", "n", "error"} for every sif2jax constrained problem, in order.

    Knowing n needs every problem instantiated (about two minutes: a few modules build
    their data at import), so the table is cached as JSON in `cache_dir` (default: the
    temp folder), keyed by the sif2jax version; `refresh=True` rebuilds it. `n` is None
    and `error` the reason where the problem fails to import or instantiate.
    """
    import importlib.metadata
    import tempfile

    version = importlib.metadata.version("sif2jax")
    cache = os.path.join(cache_dir or tempfile.gettempdir(), f"jconstrain_sif2jax_sizes_{version}.json")
    if not refresh and not full_import and os.path.exists(cache):
        with open(cache) as fh:
            return json.load(fh)
    table: dict[str, dict] = {}

    def failed(cls, err):
        table[cls] = {"module": modules.get(cls), "n": None, "error": f"{type(err).__name__}: {err}"[:300]}

    modules: dict[str, str] = {}
    if full_import:
        import sif2jax

        instances = list(sif2jax.constrained_minimisation_problems)
    else:
        plan = _constrained_plan()
        modules = {cls: module for module, cls in plan}
        for _, cls in plan:  # placeholders keep sif2jax's order
            table[cls] = None  # type: ignore[assignment]
        instances = _import_instances(plan, on_error=failed)
    for p in instances:
        cls = type(p).__name__
        if table.get(cls) is not None:
            continue
        try:
            table[cls] = {"module": modules.get(cls), "n": problem_size(p), "error": None}
        except Exception as err:
            failed(cls, err)
    table = {k: v for k, v in table.items() if v is not None}
    if not full_import:
        with open(cache + ".tmp", "w") as fh:
            json.dump(table, fh, indent=0)
        os.replace(cache + ".tmp", cache)
    return table


class _OptimumOrNaN:
    """A sif2jax problem seen through `wrap` with a missing stored optimum read as NaN."""

    def __init__(self, p):
        self._p = p

    def __getattr__(self, name):
        return getattr(self._p, name)

    @property
    def expected_objective_value(self):
        value = self._p.expected_objective_value
        return float("nan") if value is None else value


def wrap_any(p, f_ref: float | None = None) -> HSProblem:
    """`wrap` for any sif2jax constrained problem: `fstar` is None where sif2jax stores no optimum."""
    if p.expected_objective_value is not None:
        return wrap(p, f_ref)
    problem = wrap(_OptimumOrNaN(p), f_ref)
    return dataclasses.replace(problem, name=type(p).__name__, fstar=None, source=p)


def load_constrained(
    select: Callable[[str, int], bool],
    full_import: bool = False,
    cache_dir: str | None = None,
) -> tuple[list[HSProblem], list[dict]]:
    """sif2jax constrained problems with `select(name, n)` true, wrapped (`wrap_any`), in
    sif2jax's order, and the selected ones that failed to load: {"name", "n", "reason"}
    (`select` sees n=None for a problem whose size is unknown because it failed to load).
    Only the selected problems' modules are imported (sizes from `constrained_sizes`)."""
    table = constrained_sizes(cache_dir, full_import=full_import)
    skipped = [
        {"name": cls, "n": None, "reason": f"no size: {entry['error']}"}
        for cls, entry in table.items()
        if entry["n"] is None and select(cls, None)
    ]
    chosen = [cls for cls, entry in table.items() if entry["n"] is not None and select(cls, entry["n"])]
    errors: dict[str, BaseException] = {}
    if full_import or any(table[cls]["module"] is None for cls in chosen):
        import sif2jax

        by_name = {type(p).__name__: p for p in sif2jax.constrained_minimisation_problems}
        instances = [by_name[cls] for cls in chosen if cls in by_name]
    else:
        plan = [(table[cls]["module"], cls) for cls in chosen]
        instances = _import_instances(plan, on_error=lambda cls, err: errors.setdefault(cls, err))
    for cls, err in errors.items():
        skipped.append({"name": cls, "n": table[cls]["n"], "reason": f"load: {type(err).__name__}: {err}"[:300]})
    out = []
    for p in instances:
        cls = type(p).__name__
        try:
            out.append(wrap_any(p))
        except Exception as err:
            skipped.append({"name": cls, "n": table[cls]["n"], "reason": f"wrap: {type(err).__name__}: {err}"[:300]})
    return out, skipped


# --------------------------------------------------------------------------- scoring


class Evaluator:
    """Jitted f, violation, gradient and Jacobians of one problem (numpy in and out)."""

    def __init__(self, problem: HSProblem):
        import jax
        import jax.numpy as jnp

        self.problem = problem
        lower = jnp.asarray(problem.lower)
        upper = jnp.asarray(problem.upper)

        def violation(x):
            parts = [
                jnp.abs(problem.eq(x)),
                jnp.maximum(problem.ineq(x), 0.0),
                jnp.maximum(lower - x, 0.0),
                jnp.maximum(x - upper, 0.0),
            ]
            v = jnp.concatenate([jnp.ravel(p) for p in parts] + [jnp.zeros((1,), x.dtype)])
            return jnp.where(jnp.any(jnp.isnan(v)), jnp.inf, jnp.max(v))

        self._f = jax.jit(problem.objective)
        self._viol = jax.jit(violation)
        self._grad = jax.jit(jax.grad(problem.objective))
        self._eq = jax.jit(problem.eq)
        self._ineq = jax.jit(problem.ineq)
        self._jeq = jax.jit(jax.jacrev(problem.eq))
        self._jineq = jax.jit(jax.jacrev(problem.ineq))

    def f(self, x) -> float:
        return float(self._f(np.asarray(x, np.float64)))

    def violation(self, x) -> float:
        return float(self._viol(np.asarray(x, np.float64)))

    def grad(self, x) -> np.ndarray:
        return np.asarray(self._grad(np.asarray(x, np.float64)))

    def eq(self, x) -> np.ndarray:
        return np.asarray(self._eq(np.asarray(x, np.float64)))

    def ineq(self, x) -> np.ndarray:
        return np.asarray(self._ineq(np.asarray(x, np.float64)))

    def jac_eq(self, x) -> np.ndarray:
        return np.asarray(self._jeq(np.asarray(x, np.float64))).reshape(self.problem.meq, self.problem.n)

    def jac_ineq(self, x) -> np.ndarray:
        return np.asarray(self._jineq(np.asarray(x, np.float64))).reshape(self.problem.min, self.problem.n)

    def warm_up(self) -> None:
        """Compile every function (so that timed runs exclude JIT compilation)."""
        x0 = self.problem.x0
        self.f(x0), self.violation(x0), self.grad(x0)
        if self.problem.meq:
            self.eq(x0), self.jac_eq(x0)
        if self.problem.min:
            self.ineq(x0), self.jac_ineq(x0)


def f_threshold(f_ref: float) -> float:
    return f_ref + F_TOL * max(1.0, abs(f_ref))


def is_solved(f: float, viol: float, f_ref: float | None) -> bool:
    """The anchors' criterion: viol <= 1e-6 and f <= f_ref + 1e-5 max(1, |f_ref|)."""
    if f_ref is None or f is None or viol is None:
        return False
    if not (math.isfinite(f) and math.isfinite(viol)):
        return False
    return viol <= VIOL_TOL and f <= f_threshold(f_ref)


def score(evaluator: Evaluator, x) -> dict[str, Any]:
    """f, violation, NaN flag and `solved` of the returned point x, evaluated here."""
    problem = evaluator.problem
    x = np.asarray(x, np.float64).reshape(-1)
    has_nan = bool(np.any(~np.isfinite(x)))
    if has_nan:
        f, viol = float("nan"), float("inf")
    else:
        f, viol = evaluator.f(x), evaluator.violation(x)
    return {
        "f": f,
        "viol": viol,
        "solved": is_solved(f, viol, problem.f_ref),
        "x_nonfinite": has_nan,
    }
