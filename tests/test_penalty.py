"""jc.Penalty: the quadratic penalty method with continuation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jconstrain as jc
from problems import DICT_PROBLEM, HS7, HS28, HS71, HS_PROBLEMS, check_solution, kkt_residual, violation


@pytest.mark.parametrize("tp", HS_PROBLEMS, ids=lambda tp: tp.name)
def test_hock_schittkowski(tp):
    """Violation <= 1e-6, f within 1e-5 of the book's f*, KKT with ν >= 0, CONVERGED."""
    sol = jc.solve(tp.problem, tp.x0, jc.Penalty(), tp.args)
    check_solution(tp, sol)
    if tp.x_star is not None:
        np.testing.assert_allclose(sol.x, tp.x_star, atol=1e-5)


@pytest.fixture(scope="module")
def hs71_three_steps():
    return jc.solve(HS71.problem, HS71.x0, jc.Penalty(), max_steps=3)


def test_max_steps_is_honoured(hs71_three_steps):
    sol = hs71_three_steps
    assert jc.Status(int(sol.status)) == jc.Status.MAX_STEPS
    assert not bool(sol.success)
    assert int(sol.stats.iterations) == 3


def test_fields_describe_x_when_stopped_early(hs71_three_steps):
    """Mid-continuation, f, violation, multipliers and stationarity all belong to sol.x.

    Penalty's stationarity is ||∇f + Jᵀy||_∞ / max(1, ||∇f||_∞) with its own multipliers
    y = ρ c at the ρ that produced x, so it must equal the KKT residual recomputed here.
    """
    sol = hs71_three_steps
    tp = HS71
    assert float(sol.stats.violation) > 1e-6  # still infeasible: ρ has grown past x's ρ
    np.testing.assert_allclose(sol.f, tp.problem.objective(sol.x, None), rtol=1e-14)
    np.testing.assert_allclose(sol.stats.violation, violation(tp.problem, sol.x), rtol=1e-10)
    r = kkt_residual(tp.problem, sol)
    grad_f = jax.grad(tp.problem.objective)(sol.x, None)
    stationarity = np.max(np.abs(r)) / max(1.0, float(np.max(np.abs(grad_f))))
    np.testing.assert_allclose(sol.stats.stationarity, stationarity, rtol=1e-4, atol=1e-12)


def test_max_steps_zero_returns_x0():
    sol = jc.solve(HS71.problem, HS71.x0, jc.Penalty(), max_steps=0)
    assert jc.Status(int(sol.status)) == jc.Status.MAX_STEPS
    assert int(sol.stats.iterations) == 0
    np.testing.assert_array_equal(sol.x, HS71.x0)
    np.testing.assert_allclose(sol.f, HS71.problem.objective(HS71.x0, None))


def test_solver_max_steps_field_and_override():
    solver = jc.Penalty(max_steps=2)
    run = jax.jit(lambda x0: jc.solve(HS7.problem, x0, solver))
    sol = run(HS7.x0)
    assert jc.Status(int(sol.status)) == jc.Status.MAX_STEPS and int(sol.stats.iterations) == 2
    sol = jc.solve(HS7.problem, HS7.x0, solver, max_steps=30)
    check_solution(HS7, sol)
    assert int(sol.stats.iterations) > 2


def test_warm_start_from_previous_state(hs71_three_steps):
    """Warm start reuses the penalty parameter: fewer outer iterations than a cold start."""
    first = hs71_three_steps
    run = jax.jit(lambda x0, ws: jc.solve(HS71.problem, x0, jc.Penalty(), warm_start=ws))
    warm = run(first.x, first.state)
    check_solution(HS71, warm)
    cold = jc.solve(HS71.problem, first.x, jc.Penalty())
    check_solution(HS71, cold)
    assert int(warm.stats.iterations) + 2 <= int(cold.stats.iterations)
    # The warm run started at the previous ρ (not rho0), so it reached no smaller a ρ.
    assert float(warm.state.rho) >= float(first.state.rho)
    # The Solution itself is accepted in place of its state, with the same result.
    again = run(first.x, first.state)
    np.testing.assert_array_equal(again.x, warm.x)
    also = jc.solve(HS71.problem, first.x, jc.Penalty(), warm_start=first)
    np.testing.assert_allclose(also.x, warm.x, rtol=1e-12)
    assert int(also.stats.iterations) == int(warm.stats.iterations)


def test_float32_keeps_float32():
    """float32 x0 -> every float in the Solution (and the state) is float32.

    Penalty's accuracy is limited in float32 (ρ c loses digits as ρ grows), so
    the tolerances here are float32-sized.
    """
    tp = DICT_PROBLEM
    x0 = jax.tree_util.tree_map(lambda l: l.astype(jnp.float32), tp.x0)
    sol = jc.solve(tp.problem, x0, jc.Penalty(opt_tol=1e-3, viol_tol=1e-3))
    floats = jax.tree_util.tree_leaves((sol.x, sol.f, sol.multipliers, sol.stats.stationarity, sol.stats.violation))
    floats += [l for l in jax.tree_util.tree_leaves(sol.state) if jnp.issubdtype(l.dtype, jnp.floating)]
    assert floats and all(l.dtype == jnp.float32 for l in floats), {l.dtype for l in floats}
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    assert abs(float(sol.f) - tp.f_star) <= 1e-3 * abs(tp.f_star)
    assert violation(tp.problem, sol.x) <= 1e-3


def test_vmap_over_a_float_hyperparameter():
    """Float hyperparameters are dynamic: a sweep vmaps over rho0."""
    rho0 = jnp.array([1.0, 10.0, 1000.0])
    sols = jax.vmap(lambda r: jc.solve(HS28.problem, HS28.x0, jc.Penalty(rho0=r)))(rho0)
    assert np.all(np.asarray(sols.success))
    np.testing.assert_allclose(sols.x, np.broadcast_to(HS28.x_star, (3, 3)), atol=1e-5)


def test_infeasible():
    """x >= 0 and x0 <= -1: stationary for the violation at ρ_max while infeasible."""
    problem = jc.Problem(
        objective=lambda x, a: jnp.sum(x**2), ineq=lambda x, a: x[0] + 1.0, bounds=(0.0, jnp.inf)
    )
    sol = jc.solve(problem, jnp.array([1.0, 1.0]), jc.Penalty(rho0=1e10))
    assert jc.Status(int(sol.status)) == jc.Status.INFEASIBLE
    np.testing.assert_allclose(sol.x, [-0.5, 0.0], atol=1e-6)  # the least-violation point
    np.testing.assert_allclose(sol.stats.violation, 0.5, rtol=1e-6)


def test_stalled_when_nothing_can_change():
    """An optimiser that never moves, from a feasible non-optimal point: STALLED at once."""
    x0 = jnp.array([1.0, 0.0, 0.0])  # feasible for HS28, f = 1
    sol = jc.solve(HS28.problem, x0, jc.Penalty(optimizer=optax.sgd(0.0)))
    assert jc.Status(int(sol.status)) == jc.Status.STALLED
    assert int(sol.stats.iterations) == 1
    np.testing.assert_array_equal(sol.x, x0)
