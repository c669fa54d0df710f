"""Infeasible problems end INFEASIBLE at a least-violation point; feasible but hard ones
are never called INFEASIBLE.

The suite (`cases.INFEASIBLE_CASES`, 13 problems: inconsistent linear equalities and
inequalities, x² + 1 <= 0, disjoint balls, a ring outside a disc, constraints against
the bounds, an empty box, ...) and the feasible-but-hard problems of the same shapes
(`cases.FEASIBLE_HARD_CASES`: feasible sets that are one point, a thin lens, a thin band
or a tiny far disc) run as two vmapped families, one compile per solver and family.

"Least violation" is checked against an independent local minimisation (SciPy) of each
method's own violation measure started from the returned point: ½||w||² with bounds as
soft rows for the penalty and augmented-Lagrangian methods, ||w||_1 with bounds kept
exactly for SQP (its exact penalty; its iterates never leave the bounds). SciPy SLSQP's
answers on the same suite are in `benchmarks/infeasible.py`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc
from reliability import cases
from reliability.cases import EQ_FAMILY, INEQ_FAMILY, member, solve_family, status_name

SOLVERS = list(cases.SOLVERS)
FAMILY_OF = {case.name: family for family in (INEQ_FAMILY, EQ_FAMILY) for case in family.cases}


def _solution(solver: str, case: cases.Case) -> jc.Solution:
    family = FAMILY_OF[case.name]
    return member(solve_family(family, solver), family.cases.index(case))


@pytest.mark.parametrize("solver, case", cases.grid(cases.INFEASIBLE_CASES, SOLVERS))
def test_infeasible_problem_reports_infeasible(solver, case):
    """Status INFEASIBLE (never CONVERGED); x, f finite; stats.violation is the max
    violation at the returned x, recomputed here, and is positive."""
    sol = _solution(solver, case)
    assert status_name(sol) == "INFEASIBLE", (status_name(sol), np.asarray(sol.x))
    assert not bool(sol.success)
    x = np.asarray(sol.x)
    assert np.all(np.isfinite(x)) and np.isfinite(float(sol.f))
    recomputed = cases.max_violation(case, x)
    np.testing.assert_allclose(float(sol.stats.violation), recomputed, rtol=1e-9, atol=1e-12)
    assert recomputed > 0.1  # every problem of the suite has a least violation >= 1/3


LEAST_VIOLATION_CASES = [case for case in cases.INFEASIBLE_CASES if case.name != "empty-box"]


@pytest.mark.parametrize("solver, case", cases.grid(LEAST_VIOLATION_CASES, SOLVERS))
def test_infeasible_point_is_a_least_violation_point(solver, case):
    """The returned x minimises the method's violation measure locally: a SciPy local
    minimisation from x lowers it by at most 1e-6 (relative to max(1, measure))."""
    x = np.asarray(_solution(solver, case).x, float)
    if solver == "SQP":
        lower, upper = case.bounds()
        assert np.all((x >= lower) & (x <= upper)), "SQP keeps bounds exactly"
        measure = float(np.sum(cases.violation_residuals(case, x, bounds_soft=False)))
        least, _ = cases.least_violation_l1(case, x)
    else:
        measure = 0.5 * float(np.sum(cases.violation_residuals(case, x) ** 2))
        least, _ = cases.least_violation_l2(case, x)
    assert measure <= least + 1e-6 * max(1.0, least), (measure, least, x)


@pytest.mark.parametrize("solver", SOLVERS)
def test_empty_box_stops_at_once(solver):
    """lower > upper, traced under vmap (no ValueError possible): INFEASIBLE after 0
    iterations, with a finite x."""
    case = next(c for c in cases.INFEASIBLE_CASES if c.name == "empty-box")
    sol = _solution(solver, case)
    assert status_name(sol) == "INFEASIBLE"
    assert int(sol.stats.iterations) == 0
    assert np.all(np.isfinite(np.asarray(sol.x)))


@pytest.mark.parametrize("solver, case", cases.grid(cases.FEASIBLE_HARD_CASES, SOLVERS))
def test_feasible_hard_problem_is_solved_not_called_infeasible(solver, case):
    """CONVERGED, violation <= 1e-6 recomputed at x, and x within the case's x_tol of x*
    (x_tol is what viol_tol = 1e-6 permits there, see `cases.py`)."""
    sol = _solution(solver, case)
    assert status_name(sol) == "CONVERGED", (status_name(sol), np.asarray(sol.x))
    x = np.asarray(sol.x)
    assert cases.max_violation(case, x) <= 1e-6
    np.testing.assert_allclose(x, case.x_star, rtol=0, atol=case.x_tol)


# Feasible problems started where the violation is stationary but not minimal: x0 = 0
# is a maximum of the violation of ||x||² >= 1 (and of ||x||² = 1), where ∇c = 0 and
# ∇f = 0 too, so no first-order information leads on.
SADDLE_STARTS = {
    "outside-the-unit-ball": (
        jc.Problem(objective=lambda x, a: jnp.sum(x**2), ineq=lambda x, a: 1.0 - jnp.sum(x**2)),
        jnp.zeros(2),
    ),
    "on-the-unit-sphere": (
        jc.Problem(objective=lambda x, a: jnp.sum(x**2), eq=lambda x, a: jnp.sum(x**2) - 1.0),
        jnp.zeros(3),
    ),
}


@pytest.mark.parametrize("case", sorted(SADDLE_STARTS))
@pytest.mark.parametrize("solver", SOLVERS)
def test_start_at_a_stationary_point_of_the_violation_is_not_infeasible(solver, case):
    """CONVERGED at a point of the unit sphere (f* = 1), not INFEASIBLE at x0: the solvers'
    restarts nearby (`max_escapes`) find the violation falling away from x0."""
    problem, x0 = SADDLE_STARTS[case]
    sol = jc.solve(problem, x0, cases.SOLVERS[solver])
    assert status_name(sol) == "CONVERGED", sol.summary()
    assert abs(float(jnp.sum(sol.x**2)) - 1.0) <= 1e-6
    assert abs(float(sol.f) - 1.0) <= 1e-6


# min -x0 subject to exp(x0) <= x1, exp(x1) <= x2 in the box [0, 100]² x [0, 10]
# (Hock-Schittkowski 34): x* = (ln ln 10, ln 10, 10), f* = -ln ln 10.
EXP_CHAIN = jc.Problem(
    objective=lambda x, a: -x[0],
    ineq=lambda x, a: jnp.stack([jnp.exp(x[0]) - x[1], jnp.exp(x[1]) - x[2]]),
    bounds=(jnp.zeros(3), jnp.array([100.0, 100.0, 10.0])),
)


def test_scales_from_a_far_start_do_not_hide_a_violation():
    """Prescaled at x0 = (23.3, 73.8, 4.7), the two rows are shrunk by about 1e-8 and
    1e-30: at x = (2.8, 0.8, 4.8) a violation of 16 then looked stationary and jc.SQP
    ended INFEASIBLE. Its escapes prescale again where they restart, and the first
    feasible point after one starts afresh: CONVERGED at x*."""
    sol = jc.solve(EXP_CHAIN, jnp.array([23.3, 73.8, 4.7]), jc.SQP())
    assert status_name(sol) == "CONVERGED", sol.summary()
    x_star = np.array([np.log(np.log(10.0)), np.log(10.0), 10.0])
    np.testing.assert_allclose(np.asarray(sol.x), x_star, atol=1e-6)
    assert float(sol.stats.violation) <= 1e-6


def test_projected_gradient_incompatible_projection_and_bounds():
    """ProjectedGradient: the simplex {x >= 0, Σx = 1} in R² with bounds x >= 0.6 has no
    point; the clipped projection's fixed point lies off the simplex: INFEASIBLE, with
    stats.violation = its distance to the set (0.1 at x = (0.6, 0.6), ∞-norm)."""
    problem = jc.Problem(objective=lambda x, a: jnp.sum(x**2), bounds=(0.6, 1.0))
    solver = jc.ProjectedGradient(projection=jc.projections.simplex())
    sol = jc.solve(problem, jnp.array([0.9, 0.7]), solver)
    assert status_name(sol) == "INFEASIBLE"
    np.testing.assert_allclose(np.asarray(sol.x), [0.6, 0.6], atol=1e-12)
    np.testing.assert_allclose(float(sol.stats.violation), 0.1, rtol=1e-9)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_member_within_the_default_max_steps(solver):
    """The solvers' own caps (1000 SQP, 50 AugmentedLagrangian, 30 Penalty) hold for every
    member of the family."""
    cap = {"SQP": 1000, "AugmentedLagrangian": 50, "AugmentedLagrangian+newton": 50, "Penalty": 30}[solver]
    assert cap == cases.SOLVERS[solver].max_steps
    for family in (INEQ_FAMILY, EQ_FAMILY):
        assert np.all(np.asarray(solve_family(family, solver).stats.iterations) <= cap)
