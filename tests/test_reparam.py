"""Reparameterisations: feasibility for any raw value, inverses, gradients, and use
inside an equinox model trained with optax."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
import scipy.stats

from jconstrain import reparam as R

jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(0)


def raw_samples(shape):
    """Random raw values over several scales, including large ones, and zero."""
    samples = [jnp.asarray(s * RNG.normal(size=shape)) for s in (0.1, 1.0, 10.0)]
    return samples + [jnp.zeros(shape)]


def skew(A):
    return 0.5 * (A - jnp.swapaxes(A, -1, -2))


# ------------------------------------------------------------------ feasibility


def test_box():
    lo, hi = jnp.array([-1.0, 0.0, 2.0]), jnp.array([1.0, 0.5, 3.0])
    r = R.box(lo, hi)
    for raw in raw_samples(3):
        x = r(raw)
        assert np.all(x >= lo) and np.all(x <= hi)
        np.testing.assert_allclose(x, lo + (hi - lo) / (1 + np.exp(-np.asarray(raw))))
    raw = jnp.asarray(RNG.normal(size=(4, 3)) * 3)
    np.testing.assert_allclose(r.inverse(r(raw)), raw, rtol=1e-9, atol=1e-9)
    v = jnp.asarray(RNG.uniform(lo, hi, size=(4, 3)))
    np.testing.assert_allclose(r(r.inverse(v)), v, atol=1e-14)
    # boundary values: finite raw, mapped back within eps of the boundary
    raw_b = r.inverse(jnp.stack([lo, hi]))
    assert np.all(np.isfinite(raw_b))
    np.testing.assert_allclose(r(raw_b), jnp.stack([lo, hi]), atol=1e-14)
    # strictly inside in exact arithmetic: moderate raw never gives the boundary
    assert np.all(r(jnp.full(3, 30.0)) < hi) and np.all(r(jnp.full(3, -30.0)) > lo)


def test_positive():
    r = R.positive()
    for raw in raw_samples((5,)):
        assert np.all(r(raw) > 0)
    raw = jnp.asarray(RNG.normal(size=6) * 5)
    np.testing.assert_allclose(r(raw), np.log1p(np.exp(np.asarray(raw))), rtol=1e-12)
    np.testing.assert_allclose(r.inverse(r(raw)), raw, rtol=1e-10)
    v = jnp.array([1e-12, 1e-3, 1.0, 50.0, 1e5])
    np.testing.assert_allclose(r(r.inverse(v)), v, rtol=1e-12)
    assert np.all(np.isfinite(r.inverse(jnp.array([0.0, -1.0]))))


def test_simplex():
    for scale in (1.0, 3.0):
        r = R.simplex(scale)
        for raw in raw_samples((4, 6)):
            x = r(raw)
            assert np.all(x >= 0)
            np.testing.assert_allclose(x.sum(-1), scale, atol=1e-12)
        raw = jnp.asarray(RNG.normal(size=(4, 6)) * 2)
        back = r.inverse(r(raw))
        np.testing.assert_allclose(back, raw - raw.mean(-1, keepdims=True), atol=1e-10)
        v = jnp.asarray(scale * RNG.dirichlet(np.ones(6), size=4))
        np.testing.assert_allclose(r(r.inverse(v)), v, atol=1e-14)
        assert np.all(np.isfinite(r.inverse(jnp.array([scale, 0.0]))))


def test_sphere():
    r = R.sphere(2.0)
    for raw in raw_samples((5,)):
        np.testing.assert_allclose(np.linalg.norm(r(raw)), 2.0, rtol=1e-14)
    np.testing.assert_array_equal(r(jnp.zeros(3)), [2.0, 0.0, 0.0])
    v = jnp.asarray(RNG.normal(size=5))
    v = 2.0 * v / jnp.linalg.norm(v)
    np.testing.assert_allclose(r(r.inverse(v)), v, atol=1e-15)
    raw = jnp.asarray(RNG.normal(size=5))
    np.testing.assert_allclose(r(r.inverse(r(raw))), r(raw), atol=1e-15)


@pytest.mark.parametrize("method", ["cayley", "expm"])
def test_orthogonal(method):
    r = R.orthogonal(method)
    fwd, inv = jax.jit(lambda raw: r(raw)), jax.jit(lambda Q: r.inverse(Q))
    for raw in raw_samples((2, 5, 5)):  # a batch of two 5x5
        W = np.asarray(fwd(raw))
        eye = np.eye(5)
        assert np.linalg.norm(np.swapaxes(W, -1, -2) @ W - eye, axis=(-2, -1)).max() < 1e-10
        np.testing.assert_allclose(np.linalg.det(W), 1.0, atol=1e-10)  # only SO(n)
    raw = jnp.asarray(0.3 * RNG.normal(size=(2, 5, 5)))  # rotation angles < pi
    np.testing.assert_allclose(inv(fwd(raw)), skew(raw), atol=1e-10)
    Q = fwd(raw)
    np.testing.assert_allclose(fwd(inv(Q)), Q, atol=1e-12)
    # independent references for the forward maps
    A = np.asarray(skew(raw[0]))
    ref = (
        scipy.linalg.expm(A)
        if method == "expm"
        else np.linalg.solve(np.eye(5) + A, np.eye(5) - A)
    )
    np.testing.assert_allclose(Q[0], ref, atol=1e-12)
    # a random rotation (scipy) round-trips
    Q = scipy.stats.special_ortho_group.rvs(4, random_state=1)
    np.testing.assert_allclose(r(r.inverse(jnp.asarray(Q))), Q, atol=1e-10)


def test_orthogonal_limits():
    """Cayley cannot represent a rotation by pi (eigenvalue -1): its inverse blows up
    and large raw values only approach it; det -1 is never reached."""
    r = R.orthogonal("cayley")
    minus_I = -jnp.eye(2)
    assert not np.all(np.isfinite(r.inverse(minus_I)))
    W = r(jnp.array([[0.0, 1e6], [0.0, 0.0]]))
    assert np.abs(W - minus_I).max() < 1e-5
    # expm reaches it exactly
    W = R.orthogonal("expm")(jnp.array([[0.0, np.pi], [-np.pi, 0.0]]))
    np.testing.assert_allclose(W, minus_I, atol=1e-14)


# ---------------------------------------------------------------------- gradients

GRAD_CASES = [
    ("box", lambda: R.box(-1.0, 2.0), (4,)),
    ("positive", R.positive, (4,)),
    ("simplex", R.simplex, (4,)),
    ("sphere", R.sphere, (4,)),
    ("cayley", lambda: R.orthogonal("cayley"), (3, 3)),
    ("expm", lambda: R.orthogonal("expm"), (3, 3)),
]


@pytest.mark.parametrize("name,factory,shape", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients_finite_and_correct(name, factory, shape):
    r = factory()
    weights = jnp.asarray(RNG.normal(size=shape))
    loss = lambda raw: jnp.sum(weights * r(raw) ** 2) + jnp.sum(weights * r(raw))  # noqa: E731
    grad = jax.jit(jax.grad(loss))
    for raw in raw_samples(shape):
        g = grad(raw)
        assert np.all(np.isfinite(g)), (name, raw, g)
    raw = jnp.asarray(RNG.normal(size=shape))
    d = jnp.asarray(RNG.normal(size=shape))
    eps = 1e-6
    fd = (loss(raw + eps * d) - loss(raw - eps * d)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(grad(raw), d), fd, rtol=1e-6, atol=1e-8)


def test_jit_vmap():
    r = R.orthogonal()
    raw = jnp.asarray(RNG.normal(size=(3, 4, 4)))
    np.testing.assert_allclose(jax.jit(jax.vmap(r))(raw), r(raw), atol=1e-13)
    # a reparam is a pytree: it can be passed through jit
    out = jax.jit(lambda rp, x: rp(x))(R.box(0.0, 1.0), jnp.zeros(2))
    np.testing.assert_allclose(out, [0.5, 0.5])


# ------------------------------------------------------------ in an equinox model


class OrthoLinear(eqx.Module):
    """A layer whose weight is orthogonal and whose gain lies in (0.5, 2)."""

    raw: jax.Array
    gain: R.Constrained

    def __init__(self, n, key):
        self.raw = 0.1 * jax.random.normal(key, (n, n), dtype=jnp.float64)
        self.gain = R.Constrained.from_value(R.box(0.5, 2.0), jnp.array(1.0))

    @property
    def weight(self):
        return R.orthogonal()(self.raw)

    def __call__(self, x):
        return self.gain.value * (self.weight @ x)


def test_trained_inside_equinox_model():
    n = 4
    model = OrthoLinear(n, jax.random.key(0))
    Q_true = jnp.asarray(scipy.stats.special_ortho_group.rvs(n, random_state=3))
    X = jnp.asarray(RNG.normal(size=(n, 64)))
    Y = 1.5 * Q_true @ X

    def loss(model):
        return jnp.mean((jax.vmap(model, in_axes=1, out_axes=1)(X) - Y) ** 2)

    opt = optax.adam(5e-2)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state):
        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, value

    values = []
    for _ in range(40):
        model, state, value = step(model, state)
        values.append(float(value))
        W = model.weight
        assert np.abs(W.T @ W - np.eye(n)).max() < 1e-10
        assert 0.5 < float(model.gain.value) < 2.0
        assert np.isfinite(value)
    assert values[-1] < 0.5 * values[0]
    # the box bounds are Python floats: not leaves that get trained
    assert model.gain.reparam.lower == 0.5 and model.gain.reparam.upper == 2.0
    # unwrap replaces Constrained nodes by their values
    plain = R.unwrap(model)
    assert isinstance(plain.gain, jax.Array)
    np.testing.assert_allclose(plain.gain, model.gain.value)


def test_array_bounds_get_no_gradient():
    c = R.Constrained(R.box(jnp.zeros(2), jnp.ones(2)), jnp.zeros(2))
    g = jax.grad(lambda c: jnp.sum(c.value * jnp.array([1.0, 2.0])))(c)
    np.testing.assert_array_equal(g.reparam.lower, [0.0, 0.0])
    np.testing.assert_array_equal(g.reparam.upper, [0.0, 0.0])
    np.testing.assert_allclose(g.raw, [0.25, 0.5])


def test_errors():
    with pytest.raises(ValueError, match="lower"):
        R.box(1.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        R.box(0.0, jnp.inf)
    with pytest.raises(ValueError, match="method"):
        R.orthogonal("qr")
    with pytest.raises(ValueError, match="square"):
        R.orthogonal()(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="scale"):
        R.simplex(0.0)
    with pytest.raises(ValueError, match="radius"):
        R.sphere(-1.0)
