"""jc.newton: Newton's method with a shifted Cholesky factorisation, as an optax optimiser."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jconstrain as jc
from jconstrain._inner import minimise
from jconstrain._newton import ldl, ldl_solve, newton_direction, shifted_ldl


def _random_symmetric(seed: int, n: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    return (M + M.T) / 2 + shift * np.eye(n)


def _reconstruct(L, d):
    L, d = np.asarray(L), np.asarray(d)
    return L @ np.diag(d) @ L.T


@pytest.mark.parametrize("seed", range(5))
def test_ldl_reconstructs_a_positive_definite_matrix(seed):
    A = _random_symmetric(seed, 6, shift=0.0)
    A = A @ A.T + 0.1 * np.eye(6)
    L, d = ldl(jnp.asarray(A))
    assert np.all(np.asarray(d) > 0)
    np.testing.assert_allclose(np.triu(np.asarray(L), 1), 0.0)
    np.testing.assert_allclose(np.diag(np.asarray(L)), 1.0)
    np.testing.assert_allclose(_reconstruct(L, d), A, atol=1e-12 * np.abs(A).max())


@pytest.mark.parametrize("seed", range(5))
def test_shifted_ldl_leaves_a_positive_definite_matrix_unshifted(seed):
    A = _random_symmetric(seed, 5, shift=0.0)
    A = A @ A.T + 1e-3 * np.eye(5)
    L, d, tau = shifted_ldl(jnp.asarray(A))
    assert float(tau) == 0.0
    np.testing.assert_allclose(_reconstruct(L, d), A, atol=1e-12 * np.abs(A).max())


@pytest.mark.parametrize("seed", range(5))
def test_shifted_ldl_of_an_indefinite_matrix_factors_h_plus_tau_i(seed):
    H = _random_symmetric(seed, 5, shift=-1.0)
    lowest = np.linalg.eigvalsh(H)[0]
    assert lowest < 0
    L, d, tau = shifted_ldl(jnp.asarray(H))
    assert np.all(np.asarray(d) > 0)
    assert float(tau) > -lowest  # H + τI is positive definite
    np.testing.assert_allclose(_reconstruct(L, d), H + float(tau) * np.eye(5), atol=1e-10 * (np.abs(H).max() + tau))


def test_shifted_ldl_of_zero_is_the_identity():
    L, d, tau = shifted_ldl(jnp.zeros((3, 3)))
    assert float(tau) == 1.0
    np.testing.assert_allclose(_reconstruct(L, d), np.eye(3))


def test_ldl_solve_solves():
    A = _random_symmetric(7, 6, shift=0.0)
    A = A @ A.T + np.eye(6)
    b = np.arange(6.0) - 2.5
    L, d = ldl(jnp.asarray(A))
    np.testing.assert_allclose(ldl_solve(L, d, jnp.asarray(b)), np.linalg.solve(A, b), rtol=1e-10)


@pytest.mark.parametrize("seed", range(10))
def test_newton_direction_is_a_descent_direction_for_indefinite_h(seed):
    H = _random_symmetric(seed, 6, shift=-0.5)
    g = np.random.default_rng(100 + seed).standard_normal(6)
    p = np.asarray(newton_direction(jnp.asarray(H), jnp.asarray(g)))
    assert g @ p < 0


def test_newton_direction_falls_back_to_steepest_descent_on_nan():
    H = jnp.array([[jnp.nan, 0.0], [0.0, 1.0]])
    g = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(newton_direction(H, g), -g)


A = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
B = jnp.array([1.0, -2.0, 0.5])


def test_one_newton_step_solves_a_convex_quadratic():
    quadratic = lambda z: 0.5 * z @ A @ z - B @ z
    result = jax.jit(lambda z0: minimise(quadratic, z0, jc.newton(), 50, 1e-12))(jnp.zeros(3))
    assert int(result.iterations) == 1
    np.testing.assert_allclose(result.z, np.linalg.solve(np.asarray(A), np.asarray(B)), rtol=1e-12)


def rosenbrock(z):
    return (1.0 - z[0]) ** 2 + 100.0 * (z[1] - z[0] ** 2) ** 2


def test_rosenbrock_converges_in_fewer_iterations_than_lbfgs():
    run = lambda opt: jax.jit(lambda z0: minimise(rosenbrock, z0, opt, 500, 1e-10))(jnp.array([-1.2, 1.0]))
    newton, lbfgs = run(jc.newton()), run(optax.lbfgs())
    np.testing.assert_allclose(newton.z, [1.0, 1.0], atol=1e-10)
    assert float(jnp.max(jnp.abs(newton.grad))) <= 1e-10
    assert int(newton.iterations) < int(lbfgs.iterations), (int(newton.iterations), int(lbfgs.iterations))


def test_pytree_parameters():
    fn = lambda p: rosenbrock(jnp.stack([p["a"], p["b"][0]])) + jnp.sum((p["b"][1:] - 2.0) ** 2)
    opt = jc.newton()
    params = {"a": jnp.asarray(-1.2), "b": jnp.array([1.0, 0.0, 5.0])}
    state = opt.init(params)
    for _ in range(40):
        value, grad = jax.value_and_grad(fn)(params)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fn)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["a"], 1.0, atol=1e-8)
    np.testing.assert_allclose(params["b"], [1.0, 2.0, 2.0], atol=1e-8)
    # The state caches f and ∇f at the point reached.
    np.testing.assert_allclose(state.value, fn(params), rtol=1e-12)


def test_a_step_into_nan_is_backtracked_into_the_domain():
    """f = x - log x: the Newton step from x = 10 lands at x = -80 (NaN); the search
    backtracks to x > 0 and Newton then converges to the minimiser x = 1."""
    fn = lambda z: jnp.sum(z - jnp.log(z))
    result = minimise(fn, jnp.array([10.0]), jc.newton(), 100, 1e-12)
    assert not bool(result.nonfinite)
    np.testing.assert_allclose(result.z, [1.0], atol=1e-10)


def test_step_is_capped_along_a_direction_without_curvature():
    """f = x1 + x2²: the Hessian is singular along x1; the step is at most
    max_step · max(1, ||z||_∞) there instead of the ~1/eps of an unshifted factorisation."""
    fn = lambda z: z[0] + z[1] ** 2
    z = jnp.array([0.5, 1.0])
    value, grad = jax.value_and_grad(fn)(z)
    for max_step in (1.0, 10.0):
        opt = jc.newton(max_step=max_step)
        updates, _ = opt.update(grad, opt.init(z), z, value=value, grad=grad, value_fn=fn)
        assert float(jnp.max(jnp.abs(updates))) == pytest.approx(max_step)
        assert float(fn(z + updates)) < float(value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"c1": 0.0}, "c1"),
        ({"c1": 1.0}, "c1"),
        ({"max_step": 0.0}, "max_step"),
        ({"max_backtracks": -1}, "max_backtracks"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.newton(**kwargs)


def test_too_many_parameters_for_a_hessian_is_an_error():
    opt = jc.newton(max_dim=10)
    z = jnp.zeros(11)
    with pytest.raises(ValueError, match="max_dim"):
        opt.update(z, opt.init(z), z, value=0.0, grad=z, value_fn=jnp.sum)


def test_update_without_value_fn_is_an_error():
    opt = jc.newton()
    z = jnp.zeros(2)
    with pytest.raises(ValueError, match="value_fn"):
        opt.update(z, opt.init(z), z)


def hs71_problem():
    return jc.Problem(
        objective=lambda x, a: x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2],
        eq=lambda x, a: jnp.sum(x**2) - 40.0,
        ineq=lambda x, a: 25.0 - jnp.prod(x),
        bounds=(1.0, 5.0),
    )


@pytest.mark.parametrize("solver_type", [jc.AugmentedLagrangian, jc.Penalty])
def test_constrained_solvers_with_newton_inner_solves_reach_hs71(solver_type):
    """HS71 (f* = 17.0140173) with Newton inner solves, as with the default L-BFGS."""
    solver = solver_type(optimizer=jc.newton())
    sol = jc.solve(hs71_problem(), jnp.array([1.0, 5.0, 5.0, 1.0]), solver)
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    assert float(sol.stats.violation) <= 1e-6
    assert float(sol.f) == pytest.approx(17.0140173, rel=1e-6)
