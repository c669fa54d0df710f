"""Unbounded problems stop with UNBOUNDED (or MAX_STEPS) within max_steps, never CONVERGED;
`max_steps` is always honoured.

`cases.UNBOUNDED_FAMILY` (f -> -inf along a feasible ray, a cubic, a concave quadratic on
a line, a linear objective above a lower bound) runs as one vmapped family per solver
with max_steps = MAX_STEPS.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc
from reliability import cases
from reliability.cases import UNBOUNDED_FAMILY, member, solve_family, status_name

MAX_STEPS = 60
CAP = 5  # a cap that every solver reaches on some member
SOLVERS = list(cases.SOLVERS)


def _solution(solver, case):
    return member(solve_family(UNBOUNDED_FAMILY, solver, max_steps=MAX_STEPS), UNBOUNDED_FAMILY.cases.index(case))


@pytest.mark.parametrize("solver, case", cases.grid(UNBOUNDED_FAMILY.cases, SOLVERS))
def test_unbounded_problem_is_never_converged(solver, case):
    """UNBOUNDED or MAX_STEPS; at most MAX_STEPS iterations; x finite and f no higher than
    f(x0) (the returned point is a finite point of the run)."""
    sol = _solution(solver, case)
    assert status_name(sol) in ("UNBOUNDED", "MAX_STEPS"), (status_name(sol), np.asarray(sol.x))
    assert int(sol.stats.iterations) <= MAX_STEPS
    x = np.asarray(sol.x)
    assert np.all(np.isfinite(x))
    assert float(sol.f) <= float(case.objective(jnp.asarray(case.x0))) + 1e-12


@pytest.mark.parametrize("solver", SOLVERS)
def test_unbounded_status_when_f_falls_below_the_threshold(solver):
    """Where the reported f is below the solver's `unbounded_below` (-1e20) at a feasible
    point, the status says UNBOUNDED (not MAX_STEPS)."""
    sols = solve_family(UNBOUNDED_FAMILY, solver, max_steps=MAX_STEPS)
    below = (np.asarray(sols.f) < -1e20) & (np.asarray(sols.stats.violation) <= 1e-6)
    assert np.all(np.asarray(sols.status)[below] == jc.Status.UNBOUNDED)


@pytest.mark.parametrize("solver", SOLVERS)
def test_max_steps_is_honoured_by_every_member(solver):
    """No member runs past max_steps = 5; every solver here needs more than 5 steps to
    run below -1e20 on some member, so the cap is reached (MAX_STEPS), not merely
    respected by chance. (The other families check their default caps.)"""
    sols = solve_family(UNBOUNDED_FAMILY, solver, max_steps=CAP)
    iterations = np.asarray(sols.stats.iterations)
    assert np.all(iterations <= CAP)
    assert np.any((iterations == CAP) & (np.asarray(sols.status) == jc.Status.MAX_STEPS))


@pytest.mark.parametrize("solver", ["AugmentedLagrangian", "Penalty", "ProjectedGradient"])
@pytest.mark.parametrize("max_steps", [0, 1])
def test_max_steps_zero_and_one(solver, max_steps):
    """max_steps = 0 returns x0 untouched with MAX_STEPS; max_steps = 1 takes one step.
    (SQP is covered by the max_steps = 60 family above: each max_steps value is one more
    compile, and SQP's compile is the slow one.)"""
    problem = jc.Problem(objective=lambda x, a: jnp.sum((x - 3.0) ** 4), bounds=(-10.0, 10.0))
    x0 = jnp.array([0.0, 1.0])
    s = {"ProjectedGradient": jc.ProjectedGradient(), **cases.SOLVERS}[solver]
    sol = jc.solve(problem, x0, s, max_steps=max_steps)
    assert int(sol.stats.iterations) == max_steps
    assert status_name(sol) == "MAX_STEPS"
    if max_steps == 0:
        np.testing.assert_array_equal(np.asarray(sol.x), np.asarray(x0))


def test_projected_gradient_unbounded_and_max_steps():
    """ProjectedGradient on min -Σx over x >= 0: UNBOUNDED within max_steps = 200."""
    problem = jc.Problem(objective=lambda x, a: -jnp.sum(x), bounds=(0.0, jnp.inf))
    sol = jc.solve(problem, jnp.array([1.0, 2.0]), jc.ProjectedGradient(), max_steps=200)
    assert status_name(sol) == "UNBOUNDED"
    assert int(sol.stats.iterations) <= 200
    assert np.all(np.isfinite(np.asarray(sol.x)))
