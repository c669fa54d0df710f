"""jconstrain._inner.minimise: unconstrained minimisation with an optax optimiser."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jconstrain._inner import default_optimizer, minimise

A = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
B = jnp.array([1.0, -2.0, 0.5])
Z_STAR = np.linalg.solve(np.asarray(A), np.asarray(B))


def quadratic(z):
    """½ zᵀAz - bᵀz, minimised at A⁻¹b."""
    return 0.5 * z @ A @ z - B @ z


@pytest.mark.parametrize(
    "optimizer, max_steps, tol, z_tol",
    [
        (optax.lbfgs(), 100, 1e-10, 1e-9),
        (optax.adam(0.05), 5000, 1e-6, 1e-5),
    ],
    ids=["lbfgs", "adam"],
)
def test_minimise_quadratic(optimizer, max_steps, tol, z_tol):
    result = jax.jit(lambda z0: minimise(quadratic, z0, optimizer, max_steps, tol))(jnp.zeros(3))
    assert not bool(result.nonfinite)
    assert int(result.iterations) < max_steps, "stopped by max_steps, not by the tolerance"
    assert float(jnp.max(jnp.abs(result.grad))) <= tol
    np.testing.assert_allclose(result.z, Z_STAR, atol=z_tol)
    # The returned value and gradient belong to the returned z.
    value, grad = jax.value_and_grad(quadratic)(result.z)
    np.testing.assert_allclose(result.value, value, rtol=1e-12)
    np.testing.assert_allclose(result.grad, grad, atol=1e-12)
    assert int(result.evaluations) >= int(result.iterations) + 1


def test_lbfgs_beats_adam_on_iterations():
    it = {}
    for name, opt in (("lbfgs", default_optimizer()), ("adam", optax.adam(0.05))):
        it[name] = int(minimise(quadratic, jnp.zeros(3), opt, 5000, 1e-6).iterations)
    assert it["lbfgs"] < 20 < it["adam"]


def test_max_steps_honoured():
    result = minimise(quadratic, jnp.zeros(3), optax.sgd(1e-3), 7, 1e-12)
    assert int(result.iterations) == 7
    assert float(result.value) < float(quadratic(jnp.zeros(3)))


def test_start_at_minimiser_takes_no_step():
    result = minimise(quadratic, jnp.asarray(Z_STAR), default_optimizer(), 50, 1e-8)
    assert int(result.iterations) == 0
    np.testing.assert_array_equal(result.z, Z_STAR)


def test_no_move_stops():
    result = minimise(quadratic, jnp.zeros(3), optax.sgd(0.0), 50, 1e-12)
    assert int(result.iterations) == 1
    np.testing.assert_array_equal(result.z, np.zeros(3))


def test_nonfinite_keeps_last_good_point():
    """f = z - 2 log z from z = 3 with a huge SGD step lands at z < 0 (NaN): keep z = 3."""
    fn = lambda z: jnp.sum(z - 2.0 * jnp.log(z))
    z0 = jnp.array([3.0])
    result = minimise(fn, z0, optax.sgd(10.0), 50, 1e-10)
    assert bool(result.nonfinite)
    assert int(result.iterations) == 1
    np.testing.assert_array_equal(result.z, z0)
    np.testing.assert_allclose(result.value, fn(z0))
    assert np.all(np.isfinite(result.grad))


def test_vmap_over_start_points():
    z0 = jnp.stack([jnp.zeros(3), jnp.asarray(Z_STAR), jnp.ones(3) * 5.0])
    results = jax.vmap(lambda z: minimise(quadratic, z, default_optimizer(), 100, 1e-10))(z0)
    np.testing.assert_allclose(results.z, np.broadcast_to(Z_STAR, (3, 3)), atol=1e-9)
    assert int(results.iterations[1]) == 0  # the member that started at the minimiser did nothing
    assert int(results.iterations[0]) > 0


def test_float32():
    a, b = A.astype(jnp.float32), B.astype(jnp.float32)
    quadratic32 = lambda z: 0.5 * z @ a @ z - b @ z
    result = minimise(quadratic32, jnp.zeros(3, jnp.float32), default_optimizer(), 100, jnp.float32(1e-4))
    assert result.z.dtype == jnp.float32
    assert result.value.dtype == jnp.float32
    np.testing.assert_allclose(result.z, Z_STAR, atol=1e-4)


def test_minimise_stops_once_the_value_falls_below_the_floor():
    """An unbounded subproblem (f = -z1 - z2²) stops at the first point below value_floor,
    not after max_steps or at an overflow."""
    fn = lambda z: -z[0] - z[1] ** 2
    result = minimise(fn, jnp.array([0.0, 1.0]), default_optimizer(), 500, 1e-8, value_floor=-1e6)
    assert float(result.value) < -1e6
    assert np.all(np.isfinite(np.asarray(result.z)))
    assert int(result.iterations) < 500
    unfloored = minimise(fn, jnp.array([0.0, 1.0]), default_optimizer(), 5, 1e-8)
    assert int(unfloored.iterations) == 5  # without a floor it runs on
