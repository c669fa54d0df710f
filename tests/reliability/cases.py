"""Problems shared by the reliability tests and `benchmarks/infeasible.py`.

Small problems are grouped into *families* of one shape (n variables, m_eq equalities,
m_in inequalities, bounds on every variable, ±inf where a member has none), so that
one compiled, `jax.vmap`-ed solve per solver runs the whole family: member k is
selected by `args = k` through `lax.switch` (under vmap every branch is evaluated and
selected, so family members must be finite everywhere; the non-finite problems of
`test_nonfinite.py` are not batched this way). A member with fewer inequalities than
its family is padded with the always-satisfied constant rows -1 <= 0.

Independent references (SciPy, NumPy) for the checks live here as well:
`violation_residuals`, `least_violation_l1` (bounds hard) and `least_violation_l2`
(bounds soft) minimise the violation locally from a given point.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

import jconstrain as jc

INF = math.inf


@dataclasses.dataclass(frozen=True)
class Case:
    """One small problem: f(x), eq(x) == 0, ineq(x) <= 0, lower <= x <= upper.

    The functions take x only (a flat vector) and return a scalar / 1-d arrays; they
    must work on both NumPy and JAX arrays when built with `jnp` (SciPy calls them
    through `jax.numpy` too). `feasible` says whether the problem has a feasible
    point; `x_star` is the solution where known (None otherwise) and `x_tol` how close
    a solver must come to it (it reflects the problem, e.g. sqrt(viol_tol) where the
    constraint's gradient vanishes at x_star).
    """

    name: str
    objective: Callable[[Any], Any]
    x0: tuple[float, ...]
    eq: Callable[[Any], Any] | None = None
    ineq: Callable[[Any], Any] | None = None
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None
    feasible: bool = True
    x_star: tuple[float, ...] | None = None
    x_tol: float = 1e-6
    note: str = ""

    def __repr__(self) -> str:
        return self.name

    @property
    def n(self) -> int:
        return len(self.x0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.full(self.n, -INF) if self.lower is None else np.asarray(self.lower, float)
        up = np.full(self.n, INF) if self.upper is None else np.asarray(self.upper, float)
        return lo, up

    def problem(self) -> jc.Problem:
        """The case as a stand-alone `jc.Problem` (no padding, no family)."""
        wrap = lambda fn: None if fn is None else (lambda x, a: fn(x))
        bounds = None
        if self.lower is not None or self.upper is not None:
            bounds = tuple(jnp.asarray(b) for b in self.bounds())
        return jc.Problem(lambda x, a: self.objective(x), wrap(self.eq), wrap(self.ineq), bounds)

    def constraint_values(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c_E(x), c_I(x)) as float64 NumPy vectors (empty where absent)."""
        x = jnp.asarray(x, jnp.float64)
        c_eq = np.zeros(0) if self.eq is None else np.asarray(self.eq(x), float).ravel()
        c_in = np.zeros(0) if self.ineq is None else np.asarray(self.ineq(x), float).ravel()
        return c_eq, c_in


def violation_residuals(case: Case, x: np.ndarray, bounds_soft: bool = True) -> np.ndarray:
    """w(x) = (|c_E|, max(c_I, 0)[, max(l - x, 0), max(x - u, 0)]) >= 0."""
    x = np.asarray(x, float)
    c_eq, c_in = case.constraint_values(x)
    parts = [np.abs(c_eq), np.maximum(c_in, 0.0)]
    if bounds_soft:
        lo, up = case.bounds()
        parts += [np.maximum(lo - x, 0.0), np.maximum(x - up, 0.0)]
    return np.concatenate(parts)


def max_violation(case: Case, x: np.ndarray) -> float:
    """The max violation of eq, ineq and bounds at x (what `sol.stats.violation` reports)."""
    return float(np.max(violation_residuals(case, x), initial=0.0))


def least_violation_l2(case: Case, x: np.ndarray) -> tuple[float, np.ndarray]:
    """Locally minimise ||w(x)||² (bounds as soft rows) from x with SciPy's least_squares;
    return (½||w||² at the minimiser, the minimiser). The measure that the penalty and
    augmented-Lagrangian methods minimise at an infeasible problem."""
    res = scipy.optimize.least_squares(
        lambda z: violation_residuals(case, z), np.asarray(x, float), xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    return 0.5 * float(np.sum(res.fun**2)), res.x


def least_violation_l1(case: Case, x: np.ndarray) -> tuple[float, np.ndarray]:
    """Locally minimise ||w(x)||_1 over the box (bounds hard) from x; return (value,
    minimiser). Solved as the smooth epigraph problem min Σ s, s_E >= ±c_E(x),
    s_I >= c_I(x), s >= 0, l <= x <= u with SciPy's SLSQP. The measure of `jc.SQP`'s
    exact penalty (it keeps bounds exactly)."""
    n = case.n
    x = np.asarray(x, float)
    lo, up = case.bounds()
    x = np.clip(x, lo, up)
    c_eq, c_in = case.constraint_values(x)
    me, mi = c_eq.size, c_in.size

    def split(v):
        return v[:n], v[n : n + me], v[n + me :]

    def cons(v):
        z, s_e, s_i = split(v)
        ce, ci = case.constraint_values(z)
        return np.concatenate([s_e - ce, s_e + ce, s_i - ci])

    v0 = np.concatenate([x, np.abs(c_eq), np.maximum(c_in, 0.0)])
    box = [(None if not np.isfinite(a) else a, None if not np.isfinite(b) else b) for a, b in zip(lo, up)]
    box += [(0.0, None)] * (me + mi)
    res = scipy.optimize.minimize(
        lambda v: float(np.sum(v[n:])),
        v0,
        jac=lambda v: np.concatenate([np.zeros(n), np.ones(me + mi)]),
        method="SLSQP",
        bounds=box,
        constraints=[{"type": "ineq", "fun": cons}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    z = np.clip(split(res.x)[0], lo, up)
    return float(np.sum(violation_residuals(case, z, bounds_soft=False))), z


# ----------------------------------------------------------------------------- families


@dataclasses.dataclass(frozen=True)
class Family:
    """Cases of one shape, solved together: one compile per solver, vmapped over members."""

    name: str
    n: int
    m_eq: int
    m_in: int
    cases: tuple[Case, ...]

    def __post_init__(self):
        for case in self.cases:
            c_eq, c_in = case.constraint_values(np.asarray(case.x0, float))
            if case.n != self.n or c_eq.size != self.m_eq or c_in.size > self.m_in:
                raise ValueError(f"case {case.name} does not fit family {self.name}")

    def _pad(self, fn: Callable | None) -> Callable:
        def padded(x):
            values = jnp.zeros((0,), x.dtype) if fn is None else jnp.ravel(jnp.asarray(fn(x), x.dtype))
            return jnp.concatenate([values, -jnp.ones((self.m_in - values.shape[0],), x.dtype)])

        return padded

    def problem(self, lower: Any, upper: Any) -> jc.Problem:
        """The family as one `jc.Problem`; `args` is the member index."""
        objectives = [lambda x, c=c: jnp.asarray(c.objective(x), x.dtype) for c in self.cases]
        eqs = [lambda x, c=c: jnp.ravel(jnp.asarray(c.eq(x), x.dtype)) for c in self.cases]
        ineqs = [self._pad(c.ineq) for c in self.cases]
        pick = lambda fns: (lambda x, k: jax.lax.switch(k, fns, x))
        if self.m_eq == 0 and self.m_in == 0 and all(c.lower is None and c.upper is None for c in self.cases):
            return jc.Problem(objective=pick(objectives))
        return jc.Problem(
            objective=pick(objectives),
            eq=pick(eqs) if self.m_eq else None,
            ineq=pick(ineqs) if self.m_in else None,
            bounds=(lower, upper),
        )

    def inputs(self, dtype=jnp.float64) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(member indices, x0s, lowers, uppers), stacked over the members."""
        index = jnp.arange(len(self.cases), dtype=jnp.int32)
        x0 = jnp.asarray([c.x0 for c in self.cases], dtype)
        lower = jnp.asarray(np.stack([c.bounds()[0] for c in self.cases]), dtype)
        upper = jnp.asarray(np.stack([c.bounds()[1] for c in self.cases]), dtype)
        return index, x0, lower, upper

    def solve_all(self, solver: jc.AbstractSolver, max_steps: int | None = None) -> jc.Solution:
        """Every member solved by `solver` in one jitted, vmapped call (member i: row i)."""

        def one(k, x0, lower, upper):
            return jc.solve(self.problem(lower, upper), x0, solver, args=k, max_steps=max_steps)

        return jax.jit(jax.vmap(one))(*self.inputs())

    def solve_each(self, solver: jc.AbstractSolver, max_steps: int | None = None) -> jc.Solution:
        """Every member solved by `solver` one at a time with one jitted function (the
        member index is traced, so `lax.switch` runs only the member's own branch: for
        families whose functions are not finite everywhere). Stacked like `solve_all`."""

        @jax.jit
        def one(k, x0, lower, upper):
            return jc.solve(self.problem(lower, upper), x0, solver, args=k, max_steps=max_steps)

        sols = [one(*inputs) for inputs in zip(*self.inputs())]
        return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *sols)


def member(sol: jc.Solution, i: int) -> jc.Solution:
    """Row i of a batched Solution."""
    return jax.tree_util.tree_map(lambda a: a[i], sol)


def _ball(centre: Sequence[float], radius: float) -> Callable:
    c = jnp.asarray(centre, float)
    return lambda x: jnp.sum((x - c.astype(x.dtype)) ** 2) - radius**2


def _near(x: Any) -> Any:
    return jnp.sum((x - 0.3) ** 2)


# ------------------------------------------------------------------ infeasible problems
#
# Each infeasible case has no feasible point. Most start from x0 = (0.5, -0.7).

X0 = (0.5, -0.7)

INEQ_CASES = (
    Case("x^2+1<=0", _near, X0, ineq=lambda x: jnp.stack([x[0] ** 2 + 1.0]), feasible=False),
    Case(
        "disjoint-balls",
        _near,
        X0,
        ineq=lambda x: jnp.stack([_ball((2.0, 0.0), 1.0)(x), _ball((-2.0, 0.0), 1.0)(x)]),
        feasible=False,
    ),
    Case(
        "farkas",  # x1 + x2 <= -1 with x >= 0 stated as inequalities
        _near,
        X0,
        ineq=lambda x: jnp.stack([x[0] + x[1] + 1.0, -x[0], -x[1]]),
        feasible=False,
    ),
    Case(
        "box-vs-sum",  # x in [0, 1]^2 and x1 + x2 >= 3
        _near,
        X0,
        ineq=lambda x: jnp.stack([3.0 - x[0] - x[1]]),
        lower=(0.0, 0.0),
        upper=(1.0, 1.0),
        feasible=False,
    ),
    Case(
        "ring-vs-disc",  # ||x||² >= 4 and ||x||² <= 1
        _near,
        X0,
        ineq=lambda x: jnp.stack([4.0 - jnp.sum(x**2), jnp.sum(x**2) - 1.0]),
        feasible=False,
    ),
    Case(
        "parabolas",  # x2 >= x1² + 1 and x2 <= -x1² - 1
        _near,
        X0,
        ineq=lambda x: jnp.stack([x[0] ** 2 + 1.0 - x[1], x[1] + x[0] ** 2 + 1.0]),
        feasible=False,
    ),
    Case(
        "parallel-halfplanes",  # x1 >= 1 and x1 <= -1
        _near,
        X0,
        ineq=lambda x: jnp.stack([1.0 - x[0], x[0] + 1.0]),
        feasible=False,
    ),
    Case(
        "empty-box",  # lower > upper in x1; under jit/vmap the bounds are traced values
        _near,
        X0,
        ineq=lambda x: jnp.stack([x[0] + x[1] - 10.0]),
        lower=(1.0, -INF),
        upper=(0.0, INF),
        feasible=False,
        note="no least-violation point: the solve stops at x0 (lower > upper is not a constraint violation to minimise)",
    ),
)

EQ_CASES = (
    Case(
        "inconsistent-linear-eqs",  # x1 + x2 = 1 and x1 + x2 = 2
        _near,
        X0,
        eq=lambda x: jnp.stack([x[0] + x[1] - 1.0, x[0] + x[1] - 2.0]),
        feasible=False,
    ),
    Case(
        "circle-and-line",  # ||x||² = 1 and x1 + x2 = 3 (the line misses the circle)
        _near,
        X0,
        eq=lambda x: jnp.stack([jnp.sum(x**2) - 1.0, x[0] + x[1] - 3.0]),
        feasible=False,
    ),
    Case(
        "x^2=-1",  # x1² + 1 = 0 and x2 = 0
        _near,
        X0,
        eq=lambda x: jnp.stack([x[0] ** 2 + 1.0, x[1]]),
        feasible=False,
    ),
    Case(
        "circle-and-halfplane",  # ||x||² = 1, x2 = 0 and x1 >= 2
        _near,
        X0,
        eq=lambda x: jnp.stack([jnp.sum(x**2) - 1.0, x[1]]),
        ineq=lambda x: jnp.stack([2.0 - x[0]]),
        feasible=False,
    ),
    Case(
        "eqs-vs-box",  # x1 - x2 = 3, x1 + x2 = 0 (at (1.5, -1.5)) and x in [-1, 1]^2
        _near,
        X0,
        eq=lambda x: jnp.stack([x[0] - x[1] - 3.0, x[0] + x[1]]),
        lower=(-1.0, -1.0),
        upper=(1.0, 1.0),
        feasible=False,
    ),
)

# ------------------------------------------------------ feasible but hard, same shapes
#
# These must never be called INFEASIBLE: each has a feasible set that is a single point,
# a thin sliver, or far from x0.

INEQ_HARD_CASES = (
    Case(
        "tangent-balls",  # the two discs touch at 0 only (no constraint qualification there)
        lambda x: jnp.sum((x - jnp.asarray([0.3, 0.5], x.dtype)) ** 2),
        X0,
        ineq=lambda x: jnp.stack([_ball((1.0, 0.0), 1.0)(x), _ball((-1.0, 0.0), 1.0)(x)]),
        x_star=(0.0, 0.0),
        x_tol=1.1e-3,  # x2² - 2|x1| <= viol_tol allows |x2| up to sqrt(1e-6)
    ),
    Case(
        "thin-lens",  # two discs of radius 1.001 at (±1, 0): a lens 0.09 tall, 0.002 wide
        lambda x: x[1],
        X0,
        ineq=lambda x: jnp.stack([_ball((1.0, 0.0), 1.001)(x), _ball((-1.0, 0.0), 1.001)(x)]),
        x_star=(0.0, -math.sqrt(1.001**2 - 1.0)),
        x_tol=1e-5,  # the bottom of the lens is a corner: x1 is pinned to 1e-6 / 2
    ),
    Case(
        "far-tiny-disc",  # a disc of radius 0.01 at (30, -40)
        lambda x: x[0] + x[1],
        X0,
        ineq=lambda x: jnp.stack([_ball((30.0, -40.0), 0.01)(x)]),
        x_star=(30.0 - 0.01 / math.sqrt(2.0), -40.0 - 0.01 / math.sqrt(2.0)),
        x_tol=5.5e-5,  # ||x - c||² <= r² + viol_tol lets ||x - c|| exceed r by 1e-6 / (2r)
    ),
    Case(
        "thin-band-box",  # |x2 - x1²| <= 1e-4 inside the box [0, 2] x [-1, 5]; min 0.1 x2 - x1
        lambda x: 0.1 * x[1] - x[0],
        X0,
        ineq=lambda x: jnp.stack([x[1] - x[0] ** 2 - 1e-4, x[0] ** 2 - x[1] - 1e-4]),
        lower=(0.0, -1.0),
        upper=(2.0, 5.0),
        x_star=(2.0, 4.0 - 1e-4),
        x_tol=5e-6,  # x1 may exceed its bound by viol_tol, moving the band's x2 by 4e-6
    ),
)

EQ_HARD_CASES = (
    Case(
        "circle-and-tangent-line",  # ||x||² = 1 and x1 + x2 = √2 meet at one point only
        lambda x: jnp.sum((x - 2.0) ** 2),
        X0,
        eq=lambda x: jnp.stack([jnp.sum(x**2) - 1.0, x[0] + x[1] - math.sqrt(2.0)]),
        x_star=(1.0 / math.sqrt(2.0), 1.0 / math.sqrt(2.0)),
        x_tol=1.1e-3,  # along the line the circle's residual is t²: |t| <= sqrt(1e-6)
    ),
    Case(
        "hyperbola-and-diagonal",  # x1 x2 = 4, x1 = x2: (2, 2) or (-2, -2); x2 <= 10
        lambda x: jnp.sum((x - 3.0) ** 2),
        (1.0, 2.0),
        eq=lambda x: jnp.stack([x[0] * x[1] - 4.0, x[0] - x[1]]),
        ineq=lambda x: jnp.stack([x[1] - 10.0]),
        x_star=(2.0, 2.0),
    ),
)

INEQ_FAMILY = Family("inequalities", n=2, m_eq=0, m_in=3, cases=INEQ_CASES + INEQ_HARD_CASES)
EQ_FAMILY = Family("equalities", n=2, m_eq=2, m_in=1, cases=EQ_CASES + EQ_HARD_CASES)
INFEASIBLE_CASES = INEQ_CASES + EQ_CASES
FEASIBLE_HARD_CASES = INEQ_HARD_CASES + EQ_HARD_CASES


# ------------------------------------------------------------------ unbounded problems
#
# f -> -inf along feasible points. A solver must stop with UNBOUNDED (or MAX_STEPS), never
# CONVERGED, within max_steps. (Problems whose gradient vanishes at infinity, such as
# -log(1 + x²), are excluded: there a first-order method rightly finds ||∇f|| <= opt_tol.)

UNBOUNDED_FAMILY = Family(
    "unbounded",
    n=2,
    m_eq=1,
    m_in=1,
    cases=(
        Case("linear-ray", lambda x: -x[0] - x[1], (0.5, 0.5), eq=lambda x: jnp.stack([x[0] - x[1]])),
        Case("cubic", lambda x: x[0] ** 3 + x[1] ** 2, (-0.5, 0.0), eq=lambda x: jnp.stack([x[1] - 1.0])),
        Case(
            "concave-on-a-line",
            lambda x: -(x[0] ** 2) - x[1] ** 2,
            (0.8, 0.2),
            eq=lambda x: jnp.stack([x[0] + x[1] - 1.0]),
        ),
        Case(
            "linear-with-lower-bound",
            lambda x: -x[0] + x[1] ** 2,
            (1.0, 1.0),
            eq=lambda x: jnp.stack([x[1] - 0.5]),
            lower=(0.0, -INF),
        ),
    ),
)


# ------------------------------------------------------------------ degenerate problems
#
# Feasible problems without the usual constraint qualifications, or badly scaled. n = 3,
# two equalities, up to four inequalities.

_p = jnp.asarray([1.0, 2.0, 3.0])

DEGENERATE_FAMILY = Family(
    "degenerate",
    n=3,
    m_eq=2,
    m_in=4,
    cases=(
        Case(
            "redundant-equalities",  # the same plane twice (rank-deficient Jacobian)
            lambda x: jnp.sum((x - _p.astype(x.dtype)) ** 2),
            (0.0, 0.0, 0.0),
            eq=lambda x: jnp.stack([jnp.sum(x) - 1.0, 2.0 * jnp.sum(x) - 2.0]),
            x_star=(-2.0 / 3.0, 1.0 / 3.0, 4.0 / 3.0),
        ),
        Case(
            "zero-gradient-equality",  # x1² = 0: ∇ = 0 at the solution, no multiplier exists
            lambda x: (x[0] - 1.0) ** 2 + (x[1] - 1.0) ** 2 + (x[2] - 3.0) ** 2,
            (1.0, 0.0, 0.0),
            eq=lambda x: jnp.stack([x[0] ** 2, x[1] - x[2]]),
            x_star=(0.0, 2.0, 2.0),
            x_tol=1.1e-3,  # x1² <= viol_tol allows |x1| up to 1e-3
        ),
        Case(
            "zero-gradient-inequality",  # (x1 - 1)² <= 0: feasible only at x1 = 1
            lambda x: x[0] ** 2 + (x[1] - 1.0) ** 2 + (x[2] - 3.0) ** 2,
            (0.0, 0.0, 0.0),
            eq=lambda x: jnp.stack([x[1] - x[2], x[1] + x[2] - 4.0]),
            ineq=lambda x: jnp.stack([(x[0] - 1.0) ** 2]),
            x_star=(1.0, 2.0, 2.0),
            x_tol=1.1e-3,
        ),
        Case(
            "more-active-than-variables",  # 2 equalities + 4 inequalities active at 0, n = 3
            lambda x: jnp.sum((x - 1.0) ** 2),
            (0.5, -0.5, 0.25),
            eq=lambda x: jnp.stack([x[0] - x[1], x[1] - x[2]]),
            ineq=lambda x: jnp.stack([x[0], x[1], x[2], jnp.sum(x)]),
            x_star=(0.0, 0.0, 0.0),
        ),
        Case(
            "badly-scaled",  # 1e6 (equalities) against 1e-6 (inequality): see x_tol
            lambda x: (x[0] - 100.0) ** 2 + x[1] ** 2 + x[2] ** 2,
            (0.0, 0.0, 0.0),
            eq=lambda x: jnp.stack([1e6 * (jnp.sum(x) - 3.0), 1e6 * (x[1] - x[2])]),
            ineq=lambda x: jnp.stack([1e-6 * (x[0] - 0.5)]),
            x_star=None,  # x1 in [0.5, 1.5]: 1e-6 (x1 - 0.5) <= viol_tol is all that is asked
            note="the violation is measured on the constraints as written",
        ),
        Case(
            "fixed-variable",  # lower == upper for x3
            lambda x: jnp.sum(x**2),
            (0.0, 0.0, 2.0),
            eq=lambda x: jnp.stack([jnp.sum(x) - 3.0, x[0] - x[1]]),
            lower=(-INF, -INF, 2.0),
            upper=(INF, INF, 2.0),
            x_star=(0.5, 0.5, 2.0),
        ),
    ),
)


# ------------------------------------------------------------------ solvers and test helpers

# Every general-purpose solver with its default settings, and the augmented Lagrangian
# with Newton inner solves (`jc.newton()`, the batched-sweep choice for small n).
# ProjectedGradient takes only projection-type problems and is tested separately where
# it applies.
SOLVERS = {
    "SQP": jc.SQP(),
    "AugmentedLagrangian": jc.AugmentedLagrangian(),
    "AugmentedLagrangian+newton": jc.AugmentedLagrangian(optimizer=jc.newton()),  # Newton inner solves
    "Penalty": jc.Penalty(),
}

_SOLVED: dict = {}


def solve_family(family: Family, solver_name: str, max_steps: int | None = None, batched: bool = True) -> jc.Solution:
    """`family.solve_all` (or `solve_each` if not `batched`) with `SOLVERS[solver_name]`
    (or `jc.ProjectedGradient()` for "ProjectedGradient"), computed once per process."""
    key = (family.name, solver_name, max_steps, batched)
    if key not in _SOLVED:
        solver = jc.ProjectedGradient() if solver_name == "ProjectedGradient" else SOLVERS[solver_name]
        run = family.solve_all if batched else family.solve_each
        _SOLVED[key] = jax.block_until_ready(run(solver, max_steps=max_steps))
    return _SOLVED[key]


def grid(cases: Sequence[Case], solvers: Sequence[str], xfail: dict[tuple[str, str], str] | None = None) -> list:
    """pytest params (solver, case) with `xfail(strict=True)` on the listed pairs."""
    import pytest

    xfail = xfail or {}
    out = []
    for solver in solvers:
        for case in cases:
            reason = xfail.get((solver, case.name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(solver, case, marks=marks, id=f"{solver}-{case.name}"))
    return out


def status_name(sol: jc.Solution) -> str:
    return jc.Status(int(sol.status)).name


# ------------------------------------------------------------------ non-finite values
#
# Functions that return NaN/Inf somewhere. `converges`: NaN/Inf only at trial points
# (x0 and x* finite): the solve must still reach CONVERGED. Otherwise `expected` names
# the documented outcome.


@jax.custom_jvp
def _nan_slope_below_zero(t):
    """t itself, whose derivative is 1 for t >= 0 and NaN for t < 0 (a faulty gradient:
    the value stays finite)."""
    return t


@_nan_slope_below_zero.defjvp
def _nan_slope_jvp(primals, tangents):
    (t,), (dt,) = primals, tangents
    return t, jnp.where(t >= 0, dt, jnp.nan)


def _first_value_only(x):
    """x² summed where x == x0 = (1, 2), NaN anywhere else (sqrt of -||x - x0||²)."""
    return jnp.sum(x**2) + jnp.sqrt(-jnp.sum((x - jnp.asarray([1.0, 2.0], x.dtype)) ** 2))


NONFINITE_FREE_FAMILY = Family(
    "nonfinite-unconstrained",
    n=2,
    m_eq=0,
    m_in=0,
    cases=(
        Case(  # log of a negative number on the first trial step (x0 - ∇f(x0) < 0)
            "log-at-trial-points",
            lambda x: jnp.sum(x**2 - jnp.log(x)),
            (10.0, 3.0),
            x_star=(1.0 / math.sqrt(2.0), 1.0 / math.sqrt(2.0)),
            note="converges",
        ),
        Case(  # finite values, NaN gradient for x1 < 0, where the first steps go
            "nan-gradient-at-trial-points",
            lambda x: (_nan_slope_below_zero(x[0]) - 0.1) ** 2 + (x[1] - 1.0) ** 2,
            (5.0, 1.0),
            x_star=(0.1, 1.0),
            note="converges",
        ),
        Case("nan-everywhere", lambda x: jnp.sum(x**2) * jnp.nan, (1.0, 2.0), note="NONFINITE"),
        Case("inf-gradient-at-x0", lambda x: jnp.sum(jnp.sqrt(x)), (0.0, 1.0), note="NONFINITE"),
        Case("finite-only-at-x0", _first_value_only, (1.0, 2.0), note="NONFINITE"),
        Case(  # f = x1 + x2² on x1 > 0, NaN for x1 <= 0: the infimum is on the domain's edge
            "minimiser-off-the-domain",
            lambda x: x[0] + x[1] ** 2 + 0.0 * jnp.log(x[0]),
            (1.0, 1.0),
            note="not CONVERGED",
        ),
    ),
)

NONFINITE_CONSTRAINED_FAMILY = Family(
    "nonfinite-constrained",
    n=2,
    m_eq=1,
    m_in=1,
    cases=(
        Case(  # -log on trial points that leave x > 0
            "log-barrier-objective",
            lambda x: -jnp.log(x[0]) - jnp.log(x[1]),
            (0.95, 0.05),
            eq=lambda x: jnp.stack([x[0] + x[1] - 1.0]),
            x_star=(0.5, 0.5),
            note="converges",
        ),
        Case(  # a constraint that is NaN at trial points (log of x <= 0)
            "log-in-a-constraint",
            lambda x: (x[0] - 3.0) ** 2 + (x[1] - 3.0) ** 2,
            (0.01, 0.01),
            eq=lambda x: jnp.stack([x[0] - x[1]]),
            ineq=lambda x: jnp.stack([jnp.log(x[0])]),
            x_star=(1.0, 1.0),
            x_tol=2e-6,  # log(x1) <= viol_tol and |x1 - x2| <= viol_tol: x2 up to 1 + 2e-6
            note="converges",
        ),
        Case(  # an equality that is NaN at x0 already
            "nan-constraint-at-x0",
            lambda x: jnp.sum(x**2),
            (0.5, 0.5),
            eq=lambda x: jnp.stack([jnp.log(x[0] - 1.0)]),
            note="NONFINITE",
        ),
    ),
)
