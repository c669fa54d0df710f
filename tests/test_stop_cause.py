"""`sol.stats.stop_cause`: a STALLED run says which test stopped it (issue #18); every other
status reports NONE. The verbose summary line and `sol.summary()` name the cause."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from problems import HS28, HS71

import jconstrain as jc

X0 = jnp.array([1.0, 2.0])


def _any_move_costs_one(x):
    """x² summed, plus 1e6 anywhere but at X0: the gradient 2x points downhill, yet every
    trial point off X0 is worse, so every line search fails."""
    return jnp.sum(x**2) + jnp.where(jnp.all(x == X0), 0.0, 1e6)


def _cause(sol) -> jc.StopCause:
    return jc.StopCause(int(sol.stats.stop_cause))


@pytest.mark.parametrize("solver", [jc.SQP(max_search_failures=3), jc.ProjectedGradient()], ids=lambda s: type(s).__name__)
def test_failed_line_searches_name_the_line_search(solver, capsys):
    problem = jc.Problem(lambda x, a: _any_move_costs_one(x))
    sol = jc.solve(problem, X0, solver, verbose=True)
    assert sol.status_name == "STALLED", sol.summary()
    assert _cause(sol) == jc.StopCause.LINE_SEARCH
    np.testing.assert_array_equal(sol.x, X0)
    assert "STALLED (line search)" in sol.summary()
    assert "[LINE_SEARCH: the line search found no acceptable step]" in capsys.readouterr().out


def test_negligible_steps_name_the_step_size():
    """A gradient of the wrong sign (custom derivative): the search accepts only steps of
    rounding size, which count as negligible."""

    @jax.custom_jvp
    def f(x):
        return jnp.sum(x**2)

    f.defjvp(lambda p, t: (f(p[0]), -2.0 * jnp.dot(p[0], t[0])))
    problem = jc.Problem(lambda x, a: f(x), ineq=lambda x, a: x[0] - 5.0)
    sol = jc.solve(problem, X0, jc.SQP())
    assert sol.status_name == "STALLED", sol.summary()
    assert _cause(sol) in (jc.StopCause.SMALL_STEP, jc.StopCause.LINE_SEARCH)
    assert float(sol.f) >= float(jnp.sum(X0**2))  # no real progress was possible


def test_penalty_methods_tell_no_change_from_the_penalty_limit():
    """An optimiser that never moves: from a feasible start nothing changes (NO_CHANGE);
    from an infeasible one ρ climbs to rho_max and stays violated (PENALTY_LIMIT)."""
    frozen = jc.Penalty(optimizer=optax.sgd(0.0), rho_max=1e3)
    feasible = jc.solve(HS28.problem, jnp.array([1.0, 0.0, 0.0]), frozen)
    assert feasible.status_name == "STALLED" and _cause(feasible) == jc.StopCause.NO_CHANGE
    infeasible = jc.solve(HS28.problem, jnp.array([0.0, 0.0, 0.0]), frozen)
    assert infeasible.status_name == "STALLED", infeasible.summary()
    assert _cause(infeasible) == jc.StopCause.PENALTY_LIMIT
    assert float(infeasible.stats.violation) > 0.5


@pytest.mark.parametrize("solver", [jc.SQP(), jc.AugmentedLagrangian(), jc.Penalty()], ids=lambda s: type(s).__name__)
def test_other_statuses_report_no_cause(solver):
    sol = jc.solve(HS71.problem, HS71.x0, solver)
    assert sol.status_name == "CONVERGED"
    assert _cause(sol) == jc.StopCause.NONE
    assert "(" not in sol.summary().split(":")[0]


def test_causes_batch_under_vmap():
    solve = jax.vmap(lambda x0: jc.solve(jc.Problem(lambda x, a: _any_move_costs_one(x) + jnp.sum((x - x0) ** 2)), x0, jc.SQP(max_search_failures=3)))
    sols = solve(jnp.stack([X0, 3 * X0]))
    assert sols.stats.stop_cause.shape == (2,)
    # The first member starts at X0 (every move costs 1); the second converges normally.
    assert sols.status_name == ["STALLED", "CONVERGED"]
    assert [jc.StopCause(int(c)).name for c in sols.stats.stop_cause] == ["LINE_SEARCH", "NONE"]
