"""NaN/Inf from the objective, a constraint or a gradient never poisons the result.

Where NaN/Inf appear only at trial points (x0 and the solution finite) every solver still
reaches CONVERGED; where no finite way on exists it stops with NONFINITE at the last
finite point (x0 when x0 itself has a non-finite value or gradient); `sol.x` never
contains NaN. The problems (`cases.NONFINITE_*_FAMILY`) are solved one at a time by one
jitted function per solver and family (not vmapped: under vmap `lax.switch` would
evaluate every member's functions, NaN ones included).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jconstrain as jc
from jconstrain._inner import minimise
from reliability import cases
from reliability.cases import NONFINITE_CONSTRAINED_FAMILY, NONFINITE_FREE_FAMILY, member, status_name

FREE_SOLVERS = list(cases.SOLVERS) + ["ProjectedGradient"]  # unconstrained: a projection-type problem
CONSTRAINED_SOLVERS = list(cases.SOLVERS)


def _params(note: str, xfail: dict | None = None) -> list:
    free = [c for c in NONFINITE_FREE_FAMILY.cases if c.note == note]
    constrained = [c for c in NONFINITE_CONSTRAINED_FAMILY.cases if c.note == note]
    return cases.grid(free, FREE_SOLVERS, xfail) + cases.grid(constrained, CONSTRAINED_SOLVERS, xfail)


def _solution(solver: str, case: cases.Case) -> jc.Solution:
    family = NONFINITE_FREE_FAMILY if case in NONFINITE_FREE_FAMILY.cases else NONFINITE_CONSTRAINED_FAMILY
    sols = cases.solve_family(family, solver, batched=False)
    return member(sols, family.cases.index(case))


@pytest.mark.parametrize("solver, case", _params("converges"))
def test_nan_at_trial_points_only_still_converges(solver, case):
    """CONVERGED, x within x_tol of x* (1e-6 unless the case says why not), violation
    <= 1e-6 recomputed at x."""
    sol = _solution(solver, case)
    assert status_name(sol) == "CONVERGED", (status_name(sol), np.asarray(sol.x))
    x = np.asarray(sol.x)
    np.testing.assert_allclose(x, case.x_star, rtol=0, atol=case.x_tol)
    assert cases.max_violation(case, x) <= 1e-6


@pytest.mark.parametrize("solver, case", _params("NONFINITE"))
def test_no_finite_way_on_stops_nonfinite_at_the_last_finite_point(solver, case):
    """A non-finite value or gradient at x0 (NaN everywhere; an infinite gradient; a
    function finite at x0 only; a constraint NaN at x0): NONFINITE after 0 iterations,
    sol.x == x0 exactly."""
    sol = _solution(solver, case)
    assert status_name(sol) == "NONFINITE"
    assert int(sol.stats.iterations) == 0
    np.testing.assert_array_equal(np.asarray(sol.x), case.x0)


@pytest.mark.parametrize("solver, case", _params("not CONVERGED"))
def test_minimiser_off_the_domain_is_not_called_converged(solver, case):
    """f = x1 + x2² is NaN for x1 <= 0: the infimum lies on the domain's edge, where
    ∂f/∂x1 = 1. No solver may call that CONVERGED: NONFINITE or STALLED (no finite way
    on), at a finite point inside the domain that is better than x0."""
    sol = _solution(solver, case)
    assert status_name(sol) in ("NONFINITE", "STALLED"), status_name(sol)
    x = np.asarray(sol.x)
    assert np.all(np.isfinite(x)) and x[0] > 0
    f = float(sol.f)
    assert np.isfinite(f) and f < float(case.objective(jnp.asarray(case.x0)))


@pytest.mark.parametrize(
    "solver, family",
    [(s, NONFINITE_FREE_FAMILY) for s in FREE_SOLVERS] + [(s, NONFINITE_CONSTRAINED_FAMILY) for s in CONSTRAINED_SOLVERS],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_sol_x_is_never_nan(solver, family):
    """Every member of both families, every solver: sol.x finite, and every multiplier
    and stationarity figure a number or ±inf where it describes a NONFINITE x0, never at
    a CONVERGED point."""
    sols = cases.solve_family(family, solver, batched=False)
    assert np.all(np.isfinite(np.asarray(sols.x)))
    converged = np.asarray(sols.status) == jc.Status.CONVERGED
    for leaf in jax.tree_util.tree_leaves((sols.f, sols.multipliers, sols.stats.violation, sols.stats.stationarity)):
        values = np.asarray(leaf).reshape(len(family.cases), -1)
        assert np.all(np.isfinite(values[converged]))


def test_inner_minimisation_backtracks_from_a_nonfinite_step():
    """`jconstrain._inner.minimise` with backtracking on (as the penalty and ALM solvers
    run it) and plain gradient descent (no line search of its own), f = (z - 1)² -
    0.01 log z from z = 3 with step 0.9: the first update lands at z = -0.59 (log of a
    negative number). The step is halved back to a finite point and the run reaches the
    minimiser z* = (2 + sqrt(4.08)) / 4 instead of stopping at z0."""
    fn = lambda z: jnp.sum((z - 1.0) ** 2 - 0.01 * jnp.log(z))
    z_star = (2.0 + np.sqrt(4.08)) / 4.0
    result = minimise(fn, jnp.array([3.0]), optax.sgd(0.9), 500, jnp.asarray(1e-12), max_backtracks=40)
    assert not bool(result.nonfinite)
    np.testing.assert_allclose(np.asarray(result.z), [z_star], rtol=0, atol=1e-10)
    assert np.isfinite(float(result.value))


def test_inner_minimisation_stops_at_the_last_finite_point_when_there_is_no_way_on():
    """f finite only at z0 (sqrt of -||z - z0||², whose gradient is NaN there): no trial
    is finite, the run stops with `nonfinite` set and z = z0."""
    z0 = jnp.array([1.0, 2.0])
    fn = lambda z: jnp.sum(z**2) + jnp.sqrt(-jnp.sum((z - z0) ** 2))
    result = minimise(fn, z0, optax.sgd(0.1), 50, jnp.asarray(1e-12), max_backtracks=40)
    assert bool(result.nonfinite)
    np.testing.assert_array_equal(np.asarray(result.z), np.asarray(z0))


@pytest.mark.parametrize("solver_type", [jc.Penalty, jc.AugmentedLagrangian], ids=lambda t: t.__name__)
def test_solver_with_a_plain_optimizer_backtracks_from_nan(solver_type):
    """The same f = (x - 1)² - 0.01 log x from x0 = 3, solved by the penalty and ALM
    solvers whose inner optimiser is plain gradient descent (optax.sgd(0.9), no line
    search): the first inner step lands at x < 0 and is backtracked; CONVERGED at x*."""
    problem = jc.Problem(objective=lambda x, a: jnp.sum((x - 1.0) ** 2 - 0.01 * jnp.log(x)))
    sol = jc.solve(problem, jnp.array([3.0]), solver_type(optimizer=optax.sgd(0.9)))
    assert status_name(sol) == "CONVERGED"
    np.testing.assert_allclose(np.asarray(sol.x), [(2.0 + np.sqrt(4.08)) / 4.0], rtol=0, atol=1e-6)
