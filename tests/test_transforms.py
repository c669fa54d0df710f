"""`projected`: optax optimisers that stay on a set and converge to its constrained
minimiser."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jconstrain import projections as P
from jconstrain._transforms import projected

jax.config.update("jax_enable_x64", True)


def run(tx, f, x0, steps):
    """`steps` jitted optimiser steps on f; returns the trajectory (steps, ...)."""

    def step(carry, _):
        x, state = carry
        g = jax.grad(f)(x)
        u, state = tx.update(g, state, x)
        x = optax.apply_updates(x, u)
        return (x, state), x

    @jax.jit
    def scan(x0):
        return jax.lax.scan(step, (x0, tx.init(x0)), None, length=steps)[1]

    return scan(x0)


C_SIMPLEX = jnp.array([0.9, 0.6, -0.2, 0.1, 0.4])
C_BALL = jnp.array([1.5, -2.0, 0.7])
C_STIEFEL = 2.0 * jax.random.normal(jax.random.key(1), (4, 2), dtype=jnp.float64)

# (name, projection, c with min 0.5||x - c||^2 outside the set, x0, membership test).
# The constrained minimiser of 0.5||x - c||^2 is P(c) (for Stiefel too: the polar
# factor is the nearest point).
CASES = [
    (
        "simplex",
        P.simplex(),
        C_SIMPLEX,
        jnp.full(5, 0.2),
        lambda x: np.all(x >= 0) and abs(x.sum() - 1) < 1e-12,
    ),
    (
        "l2_ball",
        P.l2_ball(),
        C_BALL,
        jnp.zeros(3),
        lambda x: np.linalg.norm(x) <= 1 + 1e-12,
    ),
    (
        "stiefel",
        P.stiefel(),
        C_STIEFEL,
        jnp.eye(4, 2),
        lambda x: np.abs(x.T @ x - np.eye(2)).max() < 1e-12,
    ),
]
IDS = [c[0] for c in CASES]


def _check(traj, member, xstar, tol):
    traj = np.asarray(traj)
    for k, x in enumerate(traj):
        assert member(x), (k, x)
    np.testing.assert_allclose(traj[-1], xstar, atol=tol)


@pytest.mark.parametrize("name,proj,c,x0,member", CASES, ids=IDS)
def test_adam_with_gradient_mapping_stays_feasible_and_converges(name, proj, c, x0, member):
    f = lambda x: 0.5 * jnp.sum((x - c) ** 2)  # noqa: E731
    tx = projected(optax.adam(3e-2), proj, mapping_step=0.1)
    traj = run(tx, f, x0, 200)
    xstar = proj(c)
    _check(traj, member, xstar, 1e-3)
    # the limit is the projected-gradient fixed point x = P(x - eta grad f(x))
    x = traj[-1]
    np.testing.assert_allclose(proj(x - 0.5 * jax.grad(f)(x)), x, atol=1e-3)


@pytest.mark.parametrize("name,proj,c,x0,member", CASES, ids=IDS)
def test_adam_stays_feasible(name, proj, c, x0, member):
    f = lambda x: 0.5 * jnp.sum((x - c) ** 2)  # noqa: E731
    traj = np.asarray(run(projected(optax.adam(1e-2), proj), f, x0, 200))
    for k, x in enumerate(traj):
        assert member(x), (k, x)
    # it moved and made progress on f from x0
    assert f(traj[-1]) < f(x0) - 1e-2


@pytest.mark.parametrize("name,proj,c,x0,member", CASES, ids=IDS)
def test_sgd_is_projected_gradient(name, proj, c, x0, member):
    f = lambda x: 0.5 * jnp.sum((x - c) ** 2)  # noqa: E731
    traj = run(projected(optax.sgd(0.3), proj), f, x0, 200)
    _check(traj, member, proj(c), 1e-10)
    # step for step, x+ = P(x - lr grad f(x))
    x = traj[4]
    np.testing.assert_allclose(traj[5], proj(x - 0.3 * jax.grad(f)(x)), atol=1e-14)
    # with mapping_step = lr the iterates coincide with the plain version
    traj2 = run(projected(optax.sgd(0.3), proj, mapping_step=0.3), f, x0, 20)
    np.testing.assert_allclose(traj2, traj[:20], atol=1e-12)


def test_adam_on_box_converges_without_gradient_mapping():
    """Diagonal rescaling keeps the normal cones of a box: plain projected Adam is
    fine there."""
    c = jnp.array([2.0, -3.0, 0.25, 0.9])
    f = lambda x: 0.5 * jnp.sum(jnp.array([1.0, 3.0, 0.5, 2.0]) * (x - c) ** 2)  # noqa: E731
    traj = np.asarray(run(projected(optax.adam(3e-2), P.box(0.0, 1.0)), f, jnp.full(4, 0.5), 300))
    assert np.all((traj >= 0) & (traj <= 1))
    np.testing.assert_allclose(traj[-1], [1.0, 0.0, 0.25, 0.9], atol=1e-3)


def test_pytree_params_and_pytree_of_projections():
    params = {"w": jnp.eye(4, 2), "b": jnp.zeros(3), "s": jnp.full(3, 1 / 3)}
    target = {
        "w": C_STIEFEL,
        "b": jnp.array([5.0, -1.0, 2.0]),
        "s": jnp.array([2.0, 0.0, -1.0]),
    }

    def f(p):
        return sum(0.5 * jnp.sum((p[k] - target[k]) ** 2) for k in p)

    proj = {"w": P.stiefel(), "b": None, "s": P.simplex()}
    tx = projected(optax.sgd(0.5), proj)
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.grad(f)(p), s, p))
    for _ in range(60):
        u, state = step(params, state)
        params = optax.apply_updates(params, u)
        np.testing.assert_allclose(params["w"].T @ params["w"], np.eye(2), atol=1e-12)
        np.testing.assert_allclose(params["s"].sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(params["w"], P.stiefel()(target["w"]), atol=1e-10)
    np.testing.assert_allclose(params["b"], target["b"], atol=1e-10)
    np.testing.assert_allclose(params["s"], [1.0, 0.0, 0.0], atol=1e-10)

    # a pytree-level function: one l2 ball over all leaves together
    tx = projected(optax.sgd(0.5), P.l2_ball(2.0))
    p = {"a": jnp.zeros(2), "b": jnp.zeros((1, 2))}
    tgt = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[0.0, 4.0]])}
    g = lambda p: sum(0.5 * jnp.sum((p[k] - tgt[k]) ** 2) for k in p)  # noqa: E731
    state = tx.init(p)
    step = jax.jit(lambda p, s: tx.update(jax.grad(g)(p), s, p))
    for _ in range(50):
        u, state = step(p, state)
        p = optax.apply_updates(p, u)
    np.testing.assert_allclose(p["a"], [1.2, 0.0], atol=1e-10)
    np.testing.assert_allclose(p["b"], [[0.0, 1.6]], atol=1e-10)


def test_infeasible_start_lands_on_set():
    tx = projected(optax.sgd(0.0), P.simplex())
    x = jnp.array([3.0, 3.0, -1.0])
    u, _ = tx.update(jnp.zeros(3), tx.init(x), x)
    np.testing.assert_allclose(optax.apply_updates(x, u), [0.5, 0.5, 0.0], atol=1e-15)


def test_extra_args_are_forwarded():
    seen = {}

    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None, *, scale, **extra):
        seen.update(extra, scale=scale)
        return jax.tree.map(lambda g: -scale * g, updates), state

    inner = optax.GradientTransformationExtraArgs(init, update)
    tx = projected(inner, P.box(-1.0, 1.0))
    x = jnp.zeros(2)
    u, _ = tx.update(jnp.array([0.1, -5.0]), tx.init(x), x, scale=2.0, tag="hi")
    np.testing.assert_allclose(u, [-0.2, 1.0])
    assert seen == {"scale": 2.0, "tag": "hi"}


def test_lbfgs_with_extra_args():
    c = jnp.array([2.0, -0.5, 0.3])
    A = jnp.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 2.0]])
    f = lambda x: 0.5 * (x - c) @ A @ (x - c)  # noqa: E731
    tx = projected(optax.lbfgs(), P.box(-1.0, 1.0))
    x = jnp.zeros(3)
    state = tx.init(x)

    @jax.jit
    def step(x, state):
        value, grad = jax.value_and_grad(f)(x)
        u, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(x, u), state

    values = []
    for _ in range(10):
        x, state = step(x, state)
        assert np.all(np.abs(x) <= 1.0)
        values.append(float(f(x)))
    assert np.all(np.isfinite(values))
    # extra args reached the line search: the first step decreases f (projected
    # L-BFGS is not L-BFGS-B, so nothing stronger is asserted)
    assert values[0] < float(f(jnp.zeros(3)))
    assert values[-1] < float(f(jnp.zeros(3)))


def test_errors():
    tx = projected(optax.sgd(0.1), P.nonnegative())
    with pytest.raises(ValueError, match="params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
    with pytest.raises(ValueError, match="mapping_step"):
        projected(optax.sgd(0.1), P.nonnegative(), mapping_step=0.0)
    with pytest.raises(TypeError, match="projection"):
        projected(optax.sgd(0.1), {"a": 3})


def test_float32_params_keep_dtype():
    x = jnp.full(4, 0.25, dtype=jnp.float32)
    tx = projected(optax.adam(1e-2), P.simplex(), mapping_step=0.1)
    u, _ = tx.update(jnp.arange(4.0, dtype=jnp.float32), tx.init(x), x)
    assert u.dtype == jnp.float32
    x = optax.apply_updates(x, u)
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(x.sum(), 1.0, atol=1e-6)
