"""Degenerate problems: redundant equalities, constraints with zero gradient at the
solution, more active constraints than variables, a fixed variable (lower == upper), and
constraints scaled by 1e6 next to one scaled by 1e-6. No crash, a sensible status, the
documented behaviour (`cases.DEGENERATE_FAMILY`, one vmapped family per solver).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc
from reliability import cases
from reliability.cases import DEGENERATE_FAMILY, member, solve_family, status_name

SOLVERS = list(cases.SOLVERS)
SOLVED_CASES = [c for c in DEGENERATE_FAMILY.cases if c.x_star is not None]
BADLY_SCALED = next(c for c in DEGENERATE_FAMILY.cases if c.name == "badly-scaled")


def _solution(solver, case):
    return member(solve_family(DEGENERATE_FAMILY, solver), DEGENERATE_FAMILY.cases.index(case))


def _kkt_residual(case: cases.Case, sol: jc.Solution) -> float:
    """||∇f + J_Eᵀλ + J_Iᵀν - z_lower + z_upper||_∞ / max(1, ||∇f||_∞) at sol.x, with
    jax.jacobian of the case's own functions and the reported multipliers."""
    import jax

    x = jnp.asarray(sol.x)
    m = sol.multipliers
    grad_f = jax.grad(case.objective)(x)
    r = grad_f - m.lower + m.upper
    if case.eq is not None:
        r = r + jax.jacobian(case.eq)(x).T @ m.eq
    if case.ineq is not None:
        r = r + jax.jacobian(case.ineq)(x).T @ m.ineq[: jnp.size(case.ineq(x))]
    return float(jnp.max(jnp.abs(r)) / jnp.maximum(1.0, jnp.max(jnp.abs(grad_f))))


@pytest.mark.parametrize("solver, case", cases.grid(SOLVED_CASES, SOLVERS))
def test_degenerate_problem_is_solved(solver, case):
    """CONVERGED; violation <= 1e-6 recomputed; x within x_tol of x* (sqrt(viol_tol) where
    the constraint's gradient vanishes at x*); multipliers of inequalities and bounds
    >= 0; the KKT residual with the reported multipliers <= 1e-5 relative to ||∇f||
    (multipliers are not unique here, so only the residual is checked)."""
    sol = _solution(solver, case)
    assert status_name(sol) == "CONVERGED", (status_name(sol), np.asarray(sol.x))
    x = np.asarray(sol.x)
    assert cases.max_violation(case, x) <= 1e-6
    np.testing.assert_allclose(x, case.x_star, rtol=0, atol=case.x_tol)
    m = sol.multipliers
    assert np.all(np.asarray(m.ineq) >= 0) and np.all(np.asarray(m.lower) >= 0) and np.all(np.asarray(m.upper) >= 0)
    assert _kkt_residual(case, sol) <= 1e-5


@pytest.mark.parametrize("solver, case", cases.grid([BADLY_SCALED], SOLVERS))
def test_badly_scaled_constraints(solver, case):
    """1e6 (x1 + x2 + x3 - 3) = 0, 1e6 (x2 - x3) = 0, 1e-6 (x1 - 0.5) <= 0 with f pulling
    x1 towards 100. Documented behaviour: violations are measured on the constraints as
    written, so CONVERGED means x1 <= 0.5 + 1e-6/1e-6 = 1.5 (not 0.5), with the 1e6 rows
    held to 1e-12 in x; or STALLED (the method cannot enforce the 1e-6 row without
    ill-conditioning the 1e6 rows: rescale the constraints). Never INFEASIBLE: the
    problem is feasible."""
    sol = _solution(solver, case)
    status = status_name(sol)
    assert status in ("CONVERGED", "STALLED"), status
    x = np.asarray(sol.x)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(float(sol.stats.violation), cases.max_violation(case, x), rtol=1e-9, atol=1e-15)
    if status == "CONVERGED":
        assert cases.max_violation(case, x) <= 1e-6
        assert 0.5 - 1e-6 <= x[0] <= 1.5 + 1e-6
        assert abs(x.sum() - 3.0) <= 1e-12 and abs(x[1] - x[2]) <= 1e-12


def test_projected_gradient_with_a_fixed_variable():
    """ProjectedGradient on a box with lower == upper in one coordinate (the
    projection is None): that coordinate stays exactly at its
    value, the others solve the box QP; CONVERGED."""
    problem = jc.Problem(
        objective=lambda x, a: jnp.sum((x - jnp.array([2.0, -1.0, 0.3])) ** 2),
        bounds=(jnp.array([0.0, 0.5, 0.0]), jnp.array([1.0, 0.5, 1.0])),
    )
    sol = jc.solve(problem, jnp.array([0.5, 0.5, 0.5]), jc.ProjectedGradient())
    assert status_name(sol) == "CONVERGED"
    np.testing.assert_allclose(np.asarray(sol.x), [1.0, 0.5, 0.3], atol=1e-10)
    assert float(sol.x[1]) == 0.5


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_member_within_the_default_max_steps(solver):
    """The solvers' own caps (1000 SQP, 50 AugmentedLagrangian, 30 Penalty) hold for every
    member of the family."""
    cap = {"SQP": 1000, "AugmentedLagrangian": 50, "AugmentedLagrangian+newton": 50, "Penalty": 30}[solver]
    assert cap == cases.SOLVERS[solver].max_steps
    for family in (DEGENERATE_FAMILY,):
        assert np.all(np.asarray(solve_family(family, solver).stats.iterations) <= cap)
