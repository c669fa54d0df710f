"""Small smooth test problems with known solutions, and KKT checks, for every test module.

The Hock-Schittkowski problems are written out by hand from
W. Hock and K. Schittkowski, "Test Examples for Nonlinear Programming Codes" (1981):
starting points, optimal points and optimal values f* as printed there. Constraints
are stated in jconstrain's convention (eq == 0, ineq <= 0), so an HS constraint
g(x) >= 0 appears here as -g(x) <= 0.

Use `HS_PROBLEMS` (a list of `KnownProblem`) for parametrised tests, and
`kkt_residual` / `check_solution` to verify a `jc.Solution` against its problem.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import jconstrain as jc


@dataclasses.dataclass(frozen=True)
class KnownProblem:
    """A problem with its starting point and known solution.

    `f_star` is the optimal value, `x_star` an optimal point (None where not unique or
    not printed), `args` the args to pass to `jc.solve`.
    """

    name: str
    problem: jc.Problem
    x0: Any
    f_star: float
    x_star: Any = None
    args: Any = None
    has_eq: bool = False
    has_ineq: bool = False
    has_bounds: bool = False

    def __repr__(self) -> str:  # short ids in pytest output
        return self.name


def _arr(*values: float) -> jax.Array:
    return jnp.asarray(values, dtype=float)


# HS6: min (1 - x1)^2  s.t.  10 (x2 - x1^2) = 0.       x* = (1, 1), f* = 0.
HS6 = KnownProblem(
    name="hs6",
    problem=jc.Problem(
        objective=lambda x, a: (1.0 - x[0]) ** 2,
        eq=lambda x, a: 10.0 * (x[1] - x[0] ** 2),
    ),
    x0=_arr(-1.2, 1.0),
    f_star=0.0,
    x_star=_arr(1.0, 1.0),
    has_eq=True,
)

# HS7: min ln(1 + x1^2) - x2  s.t.  (1 + x1^2)^2 + x2^2 - 4 = 0.   x* = (0, √3), f* = -√3.
HS7 = KnownProblem(
    name="hs7",
    problem=jc.Problem(
        objective=lambda x, a: jnp.log1p(x[0] ** 2) - x[1],
        eq=lambda x, a: (1.0 + x[0] ** 2) ** 2 + x[1] ** 2 - 4.0,
    ),
    x0=_arr(2.0, 2.0),
    f_star=-math.sqrt(3.0),
    x_star=_arr(0.0, math.sqrt(3.0)),
    has_eq=True,
)

# HS28: min (x1 + x2)^2 + (x2 + x3)^2  s.t.  x1 + 2 x2 + 3 x3 - 1 = 0.
# x* = (0.5, -0.5, 0.5), f* = 0.
HS28 = KnownProblem(
    name="hs28",
    problem=jc.Problem(
        objective=lambda x, a: (x[0] + x[1]) ** 2 + (x[1] + x[2]) ** 2,
        eq=lambda x, a: x[0] + 2.0 * x[1] + 3.0 * x[2] - 1.0,
    ),
    x0=_arr(-4.0, 1.0, 1.0),
    f_star=0.0,
    x_star=_arr(0.5, -0.5, 0.5),
    has_eq=True,
)

# HS35: min 9 - 8x1 - 6x2 - 4x3 + 2x1^2 + 2x2^2 + x3^2 + 2x1x2 + 2x1x3
#       s.t. x1 + x2 + 2 x3 <= 3, x >= 0.           x* = (4/3, 7/9, 4/9), f* = 1/9.
HS35 = KnownProblem(
    name="hs35",
    problem=jc.Problem(
        objective=lambda x, a: (
            9.0 - 8.0 * x[0] - 6.0 * x[1] - 4.0 * x[2]
            + 2.0 * x[0] ** 2 + 2.0 * x[1] ** 2 + x[2] ** 2
            + 2.0 * x[0] * x[1] + 2.0 * x[0] * x[2]
        ),
        ineq=lambda x, a: x[0] + x[1] + 2.0 * x[2] - 3.0,
        bounds=(0.0, jnp.inf),
    ),
    x0=_arr(0.5, 0.5, 0.5),
    f_star=1.0 / 9.0,
    x_star=_arr(4.0 / 3.0, 7.0 / 9.0, 4.0 / 9.0),
    has_ineq=True,
    has_bounds=True,
)


# HS43 (Rosen-Suzuki): x* = (0, 1, 2, -1), f* = -44.
def _hs43_f(x, a):
    return x[0] ** 2 + x[1] ** 2 + 2.0 * x[2] ** 2 + x[3] ** 2 - 5.0 * x[0] - 5.0 * x[1] - 21.0 * x[2] + 7.0 * x[3]


def _hs43_ineq(x, a):
    g1 = 8.0 - x[0] ** 2 - x[1] ** 2 - x[2] ** 2 - x[3] ** 2 - x[0] + x[1] - x[2] + x[3]
    g2 = 10.0 - x[0] ** 2 - 2.0 * x[1] ** 2 - x[2] ** 2 - 2.0 * x[3] ** 2 + x[0] + x[3]
    g3 = 5.0 - 2.0 * x[0] ** 2 - x[1] ** 2 - x[2] ** 2 - 2.0 * x[0] + x[1] + x[3]
    return -jnp.stack([g1, g2, g3])


HS43 = KnownProblem(
    name="hs43",
    problem=jc.Problem(objective=_hs43_f, ineq=_hs43_ineq),
    x0=_arr(0.0, 0.0, 0.0, 0.0),
    f_star=-44.0,
    x_star=_arr(0.0, 1.0, 2.0, -1.0),
    has_ineq=True,
)

# HS48: min (x1-1)^2 + (x2-x3)^2 + (x4-x5)^2
#       s.t. x1+x2+x3+x4+x5 = 5, x3 - 2(x4+x5) = -3.   x* = (1, 1, 1, 1, 1), f* = 0.
HS48 = KnownProblem(
    name="hs48",
    problem=jc.Problem(
        objective=lambda x, a: (x[0] - 1.0) ** 2 + (x[1] - x[2]) ** 2 + (x[3] - x[4]) ** 2,
        eq=lambda x, a: jnp.stack([jnp.sum(x) - 5.0, x[2] - 2.0 * (x[3] + x[4]) + 3.0]),
    ),
    x0=_arr(3.0, 5.0, -3.0, 2.0, -2.0),
    f_star=0.0,
    x_star=_arr(1.0, 1.0, 1.0, 1.0, 1.0),
    has_eq=True,
)

# HS71: min x1 x4 (x1 + x2 + x3) + x3  s.t.  x1 x2 x3 x4 >= 25, Σ x_i^2 = 40, 1 <= x <= 5.
# x* = (1, 4.7429994, 3.8211503, 1.3794082), f* = 17.0140173.
HS71 = KnownProblem(
    name="hs71",
    problem=jc.Problem(
        objective=lambda x, a: x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2],
        eq=lambda x, a: jnp.sum(x**2) - 40.0,
        ineq=lambda x, a: 25.0 - jnp.prod(x),
        bounds=(1.0, 5.0),
    ),
    x0=_arr(1.0, 5.0, 5.0, 1.0),
    f_star=17.0140173,
    x_star=_arr(1.0, 4.7429994, 3.8211503, 1.3794082),
    has_eq=True,
    has_ineq=True,
    has_bounds=True,
)

# HS21: min 0.01 x1^2 + x2^2 - 100  s.t.  10 x1 - x2 >= 10, 2 <= x1 <= 50, -50 <= x2 <= 50.
# x* = (2, 0), f* = -99.96.
HS21 = KnownProblem(
    name="hs21",
    problem=jc.Problem(
        objective=lambda x, a: 0.01 * x[0] ** 2 + x[1] ** 2 - 100.0,
        ineq=lambda x, a: 10.0 - 10.0 * x[0] + x[1],
        bounds=(_arr(2.0, -50.0), _arr(50.0, 50.0)),
    ),
    x0=_arr(-1.0, -1.0),
    f_star=-99.96,
    x_star=_arr(2.0, 0.0),
    has_ineq=True,
    has_bounds=True,
)

# HS5: min sin(x1 + x2) + (x1 - x2)^2 - 1.5 x1 + 2.5 x2 + 1,  -1.5 <= x1 <= 4, -3 <= x2 <= 3.
# Bounds only (inactive at the solution). x* = (1/2 - π/3, -1/2 - π/3), f* = -√3/2 - π/3.
HS5 = KnownProblem(
    name="hs5",
    problem=jc.Problem(
        objective=lambda x, a: jnp.sin(x[0] + x[1]) + (x[0] - x[1]) ** 2 - 1.5 * x[0] + 2.5 * x[1] + 1.0,
        bounds=(_arr(-1.5, -3.0), _arr(4.0, 3.0)),
    ),
    x0=_arr(0.0, 0.0),
    f_star=-math.sqrt(3.0) / 2.0 - math.pi / 3.0,
    x_star=_arr(0.5 - math.pi / 3.0, -0.5 - math.pi / 3.0),
    has_bounds=True,
)

HS_PROBLEMS = [HS5, HS6, HS7, HS28, HS35, HS43, HS48, HS71, HS21]
# Problems whose only constraints are bounds (for projection methods).
BOUND_ONLY_PROBLEMS = [tp for tp in HS_PROBLEMS if not (tp.has_eq or tp.has_ineq)]


# A problem on a dict x with leaves of different shapes, eq/ineq returning pytrees:
#   min ||a - p||^2 + ||B - q||_F^2  s.t.  sum(a) = 1            (eq, a dict)
#                                          B[i, j] <= 0.25        (ineq, a tuple)
#                                          a[0] <= 0.2            (a second ineq leaf)
#   with p = (0.6, 0.6, 0.6), q = ones((2, 2)). Separable and convex: solved in closed form.
def _dict_problem() -> KnownProblem:
    p = jnp.array([0.6, 0.6, 0.6])
    q = jnp.ones((2, 2))

    def objective(x, a):
        return jnp.sum((x["a"] - p) ** 2) + jnp.sum((x["B"] - q) ** 2)

    def eq(x, a):
        return {"sum": jnp.sum(x["a"]) - 1.0}

    def ineq(x, a):
        return (x["B"] - 0.25, x["a"][:1] - 0.2)

    # a: minimise ||a - p||^2 with sum(a) = 1, a0 <= 0.2. With a0 = 0.2 active,
    # a1 = a2 = 0.4 (projection of p onto sum = 0.8 for the other two). Check the
    # a0 multiplier is positive: ∂/∂a0: 2(a0 - 0.6) + λ + ν = 0, ∂/∂a1: 2(0.4 - 0.6) + λ = 0
    # -> λ = 0.4, ν = 0.8 - 0.4 = 0.4 > 0. f* = 0.16 + 2*0.04 + 4*0.75^2 = 2.49.
    x_star = {"a": jnp.array([0.2, 0.4, 0.4]), "B": jnp.full((2, 2), 0.25)}
    f_star = float(objective(x_star, None))
    return KnownProblem(
        name="dict",
        problem=jc.Problem(objective=objective, eq=eq, ineq=ineq),
        x0={"a": jnp.zeros(3), "B": jnp.zeros((2, 2))},
        f_star=f_star,
        x_star=x_star,
        has_eq=True,
        has_ineq=True,
    )


DICT_PROBLEM = _dict_problem()


# A parametrised problem for vmap over args: project the point c (args) onto the unit
# disc, min ||x - c||^2 s.t. ||x||^2 <= 1. x* = c / max(1, ||c||), f* = (max(||c|| - 1, 0))^2.
def disc_projection_problem() -> jc.Problem:
    return jc.Problem(
        objective=lambda x, c: jnp.sum((x - c) ** 2),
        ineq=lambda x, c: jnp.sum(x**2) - 1.0,
    )


def disc_projection_solution(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x* and f* for `disc_projection_problem` at each row of c (batched)."""
    c = np.asarray(c)
    norm = np.linalg.norm(c, axis=-1, keepdims=True)
    x_star = c / np.maximum(norm, 1.0)
    f_star = np.maximum(norm[..., 0] - 1.0, 0.0) ** 2
    return x_star, f_star


# ---------------------------------------------------------------------------------
# Checks of a Solution against its problem
# ---------------------------------------------------------------------------------


def _flat_fns(problem: jc.Problem, x: Any, args: Any):
    """Flat views of f, eq, ineq around the variables of x."""
    params, static = eqx.partition(x, eqx.is_inexact_array)
    z, unravel = ravel_pytree(params)
    to_x = lambda z: eqx.combine(unravel(z), static)
    f = lambda z: problem.objective(to_x(z), args)

    def flat(fn: Callable | None):
        if fn is None:
            return None
        return lambda z: ravel_pytree(fn(to_x(z), args))[0]

    return z, f, flat(problem.eq), flat(problem.ineq)


def _flat_vars(tree: Any) -> np.ndarray:
    """The inexact-array leaves of tree, raveled (None -> empty)."""
    if tree is None:
        return np.zeros((0,))
    return np.asarray(ravel_pytree(eqx.filter(tree, eqx.is_inexact_array))[0])


def kkt_residual(problem: jc.Problem, sol: jc.Solution, args: Any = None) -> np.ndarray:
    """∇f + J_eqᵀ λ + J_ineqᵀ ν - z_lower + z_upper at sol.x, with jax.jacobian."""
    z, f, eq, ineq = _flat_fns(problem, sol.x, args)
    r = np.asarray(jax.grad(f)(z))
    if eq is not None:
        r = r + np.asarray(jax.jacobian(eq)(z)).reshape(-1, z.size).T @ _flat_vars(sol.multipliers.eq)
    if ineq is not None:
        r = r + np.asarray(jax.jacobian(ineq)(z)).reshape(-1, z.size).T @ _flat_vars(sol.multipliers.ineq)
    if problem.bounds is not None:
        r = r - _flat_vars(sol.multipliers.lower) + _flat_vars(sol.multipliers.upper)
    return r


def violation(problem: jc.Problem, x: Any, args: Any = None) -> float:
    """The max violation of eq, ineq and bounds at x, recomputed independently."""
    z, _, eq, ineq = _flat_fns(problem, x, args)
    v = 0.0
    if eq is not None:
        v = max(v, float(np.max(np.abs(np.asarray(eq(z))), initial=0.0)))
    if ineq is not None:
        v = max(v, float(np.max(np.asarray(ineq(z)), initial=0.0)))
    if problem.bounds is not None:
        lower, upper = problem.bounds
        leaves = jax.tree_util.tree_leaves(eqx.filter(x, eqx.is_inexact_array))
        for side, sign in ((lower, -1.0), (upper, 1.0)):
            if side is None:
                continue
            if jax.tree_util.tree_structure(side) == jax.tree_util.tree_structure(0.0):
                side_leaves = [side] * len(leaves)
            else:  # a pytree shaped like x's variables
                side_leaves = jax.tree_util.tree_leaves(side)
            for b, leaf in zip(side_leaves, leaves):
                b = np.broadcast_to(np.asarray(b, float), np.shape(leaf))
                d = sign * (np.asarray(leaf) - b)
                d = np.where(np.isfinite(b), d, -np.inf)
                v = max(v, float(np.max(d, initial=0.0)))
    return v


def check_solution(
    tp: KnownProblem,
    sol: jc.Solution,
    *,
    f_rtol: float = 1e-5,
    viol_tol: float = 1e-6,
    kkt_tol: float = 1e-5,
) -> None:
    """Assert sol is the known optimum of tp: status, f, feasibility, KKT, sign of ν."""
    status = jc.Status(int(sol.status))
    assert status == jc.Status.CONVERGED, f"{tp.name}: status {status.name}"
    assert bool(sol.success)
    f = float(tp.problem.objective(sol.x, tp.args))
    assert abs(f - tp.f_star) <= f_rtol * max(1.0, abs(tp.f_star)), f"{tp.name}: f = {f}, f* = {tp.f_star}"
    # Every Solution field describes sol.x.
    np.testing.assert_allclose(float(sol.f), f, rtol=1e-12, atol=1e-12)
    v = violation(tp.problem, sol.x, tp.args)
    assert v <= viol_tol, f"{tp.name}: violation {v}"
    np.testing.assert_allclose(float(sol.stats.violation), v, rtol=1e-6, atol=1e-12)
    # Sign conventions: ν >= 0, bound multipliers >= 0, and the KKT residual vanishes.
    for name in ("ineq", "lower", "upper"):
        m = _flat_vars(getattr(sol.multipliers, name))
        assert np.all(m >= 0), f"{tp.name}: multipliers.{name} has negative entries {m}"
    r = kkt_residual(tp.problem, sol, tp.args)
    z, f_flat, _, _ = _flat_fns(tp.problem, sol.x, tp.args)
    scale = max(1.0, float(np.max(np.abs(np.asarray(jax.grad(f_flat)(z))))))
    assert np.max(np.abs(r)) <= kkt_tol * scale, f"{tp.name}: KKT residual {r}"
