"""Projections vs independent references, optimality (KKT / variational inequality),
idempotence, membership, batching, derivatives and edge cases."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jconstrain import projections as P

jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(0)
N = 7


# ----------------------------------------------------------------------- references


def _bisect(fn, lo, hi, iters=200):
    """Root of a decreasing function on [lo, hi]."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if fn(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ref_simplex(x, s=1.0):
    """theta with sum max(x - theta, 0) = s by bisection (no sorting)."""
    if s == 0:
        return np.zeros_like(x)
    theta = _bisect(lambda t: np.maximum(x - t, 0).sum() - s, x.min() - s, x.max())
    return np.maximum(x - theta, 0)


def ref_l1_ball(x, r=1.0):
    if np.abs(x).sum() <= r:
        return x
    return np.sign(x) * ref_simplex(np.abs(x), r)


def null_space_projector(A):
    Nmat = scipy.linalg.null_space(A)
    return Nmat @ Nmat.T


# ------------------------------------------------------------ samplers of each set


def sample_simplex(k, n, s=1.0):
    return s * RNG.dirichlet(np.ones(n), size=k)


def sample_l1(k, n, r=1.0):
    return (
        RNG.choice([-1.0, 1.0], size=(k, n))
        * sample_simplex(k, n)
        * r
        * RNG.uniform(size=(k, 1))
    )


def sample_l2(k, n, r=1.0):
    d = RNG.normal(size=(k, n))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return r * d * RNG.uniform(size=(k, 1)) ** (1 / n)


def _in_set_checks(project, x, ys, member, atol=1e-9):
    """Membership, idempotence and <x - P(x), y - P(x)> <= 0 for y in the set."""
    p = np.asarray(project(jnp.asarray(x)))
    assert member(p), p
    np.testing.assert_allclose(np.asarray(project(jnp.asarray(p))), p, atol=1e-12)
    for y in ys:
        assert np.vdot(x - p, y - p) <= 1e-8, np.vdot(x - p, y - p)
        # points between P(x) and y too (sharper near P(x))
        for t in (1e-3, 0.1):
            assert np.vdot(x - p, t * (y - p)) <= 1e-8
    return p


# ---------------------------------------------------------------------- convex sets


def test_box_and_nonnegative():
    lo = RNG.uniform(-1, 0, N)
    hi = lo + RNG.uniform(0, 2, N)
    proj = jax.jit(P.box(lo, hi))
    for _ in range(5):
        x = 2 * RNG.normal(size=N)
        ys = RNG.uniform(lo, hi, size=(20, N))
        p = _in_set_checks(
            proj, x, ys, lambda p: np.all(p >= lo - 1e-15) and np.all(p <= hi + 1e-15)
        )
        np.testing.assert_allclose(p, np.clip(x, lo, hi), atol=1e-15)
        p = _in_set_checks(
            P.nonnegative(), x, np.abs(RNG.normal(size=(20, N))), lambda p: np.all(p >= 0)
        )
        np.testing.assert_allclose(p, np.maximum(x, 0), atol=0)


def test_box_pytrees_scalars_and_none():
    x = {"a": jnp.array([-2.0, 0.5, 3.0]), "b": jnp.array([[4.0, -4.0]])}
    tree = lambda a, b: {"a": jnp.array(a), "b": jnp.array(b)}  # noqa: E731
    # chex compares whole pytrees: structure, shapes, dtypes and values.
    chex.assert_trees_all_equal(P.box(-1.0, 1.0)(x), tree([-1.0, 0.5, 1.0], [[1.0, -1.0]]), strict=True)
    lower = {"a": jnp.zeros(3), "b": -jnp.ones((1, 2))}
    upper = {"a": jnp.full(3, 0.25), "b": jnp.array([[10.0, 10.0]])}
    chex.assert_trees_all_equal(P.box(lower, upper)(x), tree([0.0, 0.25, 0.25], [[4.0, -1.0]]), strict=True)
    np.testing.assert_array_equal(P.box(None, 1.0)(x["a"]), [-2.0, 0.5, 1.0])
    chex.assert_trees_all_equal(P.box(None, upper)(x), tree([-2.0, 0.25, 0.25], [[4.0, -4.0]]), strict=True)
    np.testing.assert_array_equal(P.box(-jnp.inf, jnp.inf)(x["a"]), x["a"])
    np.testing.assert_array_equal(P.nonnegative()(x)["b"], [[4.0, 0.0]])


def test_simplex_vs_bisection_and_kkt():
    for scale in (1.0, 2.5):
        proj = jax.jit(P.simplex(scale))
        for _ in range(10):
            x = RNG.normal(size=N) * RNG.choice([0.1, 1.0, 10.0])
            p = _in_set_checks(
                proj,
                x,
                sample_simplex(20, N, scale),
                lambda p: np.all(p >= 0) and abs(p.sum() - scale) < 1e-12,
            )
            np.testing.assert_allclose(p, ref_simplex(x, scale), atol=1e-10)
            # KKT: x - p = theta on the support, <= theta off it
            support = p > 0
            theta = (x - p)[support]
            assert np.ptp(theta) < 1e-10
            assert np.all((x - p)[~support] <= theta[0] + 1e-10)


def test_simplex_last_axis_batches_and_edge_cases():
    X = RNG.normal(size=(3, 4, N))
    out = P.simplex()(X)
    for i in range(3):
        for j in range(4):
            np.testing.assert_allclose(out[i, j], ref_simplex(X[i, j]), atol=1e-10)
    # per-row scales
    scales = np.array([1.0, 2.0, 0.5])
    out = P.simplex(scales)(X[:, 0])
    np.testing.assert_allclose(out.sum(-1), scales, atol=1e-12)
    # ties: a constant vector goes to the barycentre; ties in the top entries
    np.testing.assert_allclose(P.simplex()(jnp.full(4, 3.0)), np.full(4, 0.25))
    np.testing.assert_allclose(P.simplex()(jnp.array([2.0, 2.0, 0.0])), [0.5, 0.5, 0.0])
    # already inside, a vertex, scale 0, one entry
    p = sample_simplex(1, N)[0]
    np.testing.assert_allclose(P.simplex()(p), p, atol=1e-15)
    np.testing.assert_allclose(P.simplex()(jnp.array([0.0, 1.0])), [0.0, 1.0])
    np.testing.assert_array_equal(P.simplex(0.0)(jnp.array([1.0, -2.0])), [0.0, 0.0])
    np.testing.assert_allclose(P.simplex(3.0)(jnp.array([-7.0])), [3.0])
    # gradients exist (no NaN) at ties and zeros
    for x in (jnp.zeros(4), jnp.array([1.0, 1.0, 0.0, -1.0])):
        g = jax.grad(lambda z: jnp.sum(P.simplex()(z) ** 2 * jnp.arange(4.0)))(x)
        assert np.all(np.isfinite(g))


def test_simplex_jacobian_matches_finite_differences():
    x = jnp.asarray(RNG.normal(size=N))
    J = jax.jacfwd(P.simplex())(x)
    eps = 1e-6
    fd = np.stack(
        [
            (P.simplex()(x + eps * e) - P.simplex()(x - eps * e)) / (2 * eps)
            for e in np.eye(N)
        ],
        axis=1,
    )
    np.testing.assert_allclose(J, fd, atol=1e-6)


def test_l1_ball():
    for r in (1.0, 0.3):
        proj = jax.jit(P.l1_ball(r))
        for _ in range(10):
            x = RNG.normal(size=N) * RNG.choice([0.05, 1.0, 5.0])
            p = _in_set_checks(
                proj, x, sample_l1(20, N, r), lambda p: np.abs(p).sum() <= r + 1e-12
            )
            np.testing.assert_allclose(p, ref_l1_ball(x, r), atol=1e-10)
    np.testing.assert_array_equal(P.l1_ball(0.0)(jnp.ones(3)), np.zeros(3))
    np.testing.assert_array_equal(P.l1_ball()(jnp.zeros(3)), np.zeros(3))
    g = jax.grad(lambda z: jnp.sum(P.l1_ball()(z)))(jnp.zeros(3))
    assert np.all(np.isfinite(g))
    # a pytree is one vector
    tree = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[-1.0]])}
    out = P.l1_ball()(tree)
    np.testing.assert_allclose(
        np.concatenate([out["a"], out["b"].ravel()]), ref_l1_ball(np.array([3.0, 0, -1]))
    )


def test_l2_ball():
    for r in (1.0, 2.0):
        proj = jax.jit(P.l2_ball(r))
        for _ in range(10):
            x = RNG.normal(size=N) * RNG.choice([0.1, 1.0, 5.0])
            p = _in_set_checks(
                proj, x, sample_l2(20, N, r), lambda p: np.linalg.norm(p) <= r + 1e-12
            )
            ref = x if np.linalg.norm(x) <= r else r * x / np.linalg.norm(x)
            np.testing.assert_allclose(p, ref, atol=1e-12)


def test_l2_ball_edge_cases_and_gradients():
    proj = P.l2_ball()
    np.testing.assert_array_equal(proj(jnp.zeros(3)), np.zeros(3))
    np.testing.assert_array_equal(P.l2_ball(0.0)(jnp.ones(3)), np.zeros(3))
    np.testing.assert_array_equal(P.l2_ball(0.0)(jnp.zeros(3)), np.zeros(3))
    g0 = jax.jacfwd(proj)(jnp.zeros(3))
    np.testing.assert_allclose(g0, np.eye(3))  # identity inside the ball
    g0 = jax.grad(lambda z: jnp.sum(proj(z)))(jnp.zeros(3))
    np.testing.assert_allclose(g0, np.ones(3))
    g = jax.grad(lambda z: jnp.sum(P.l2_ball(0.0)(z)))(jnp.zeros(3))
    assert np.all(np.isfinite(g))
    # outside: d/dx (r x/|x|) = r (I - u u^T)/|x|
    x = jnp.array([3.0, 4.0, 0.0])
    u = np.asarray(x) / 5.0
    np.testing.assert_allclose(jax.jacfwd(proj)(x), (np.eye(3) - np.outer(u, u)) / 5.0)
    # pytrees: one vector
    tree = {"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}
    out = proj(tree)
    np.testing.assert_allclose(out["a"], [0.6])
    np.testing.assert_allclose(out["b"], [[0.8]])


def test_linf_ball():
    proj = jax.jit(P.linf_ball(0.5))
    for _ in range(5):
        x = RNG.normal(size=N)
        ys = RNG.uniform(-0.5, 0.5, size=(20, N))
        p = _in_set_checks(proj, x, ys, lambda p: np.abs(p).max() <= 0.5)
        np.testing.assert_allclose(p, np.clip(x, -0.5, 0.5))
    np.testing.assert_array_equal(P.linf_ball(0.0)(jnp.ones(2)), np.zeros(2))


def test_halfspace():
    a = RNG.normal(size=N)
    b = 0.7
    proj = jax.jit(P.halfspace(a, b))
    for _ in range(10):
        x = 2 * RNG.normal(size=N)
        z = RNG.normal(size=(20, N))
        excess = np.maximum(z @ a - b, 0) + RNG.uniform(size=20)
        ys = z - (excess / (a @ a))[:, None] * a
        p = _in_set_checks(proj, x, ys, lambda p: a @ p <= b + 1e-12)
        # KKT: x - p = lambda a with lambda >= 0, complementary
        lam = (x - p) @ a / (a @ a)
        np.testing.assert_allclose(x - p, lam * a, atol=1e-12)
        assert lam >= -1e-15
        assert abs(lam * (a @ p - b)) < 1e-10


@pytest.mark.parametrize("kind", ["full_row_rank", "rank_deficient", "inconsistent"])
def test_affine_vs_null_space(kind):
    m, n = 3, N
    if kind == "full_row_rank":
        A = RNG.normal(size=(m, n))
    else:
        A = RNG.normal(size=(m, 2)) @ RNG.normal(size=(2, n))  # rank 2
    if kind == "inconsistent":
        b = RNG.normal(size=m)  # generically outside range(A)
        anchor = scipy.linalg.lstsq(A, b)[0]
        member = lambda p: np.allclose(A.T @ (A @ p - b), 0, atol=1e-10)  # noqa: E731
    else:
        anchor = RNG.normal(size=n)
        b = A @ anchor
        member = lambda p: np.allclose(A @ p, b, atol=1e-10)  # noqa: E731
    Pn = null_space_projector(A)
    proj = jax.jit(P.affine(A, b))
    for _ in range(5):
        x = RNG.normal(size=n)
        ys = anchor + RNG.normal(size=(10, n)) @ Pn
        p = _in_set_checks(proj, x, ys, member)
        np.testing.assert_allclose(p, anchor + Pn @ (x - anchor), atol=1e-10)
        # for an affine set the variational inequality is an equality
        for y in ys:
            assert abs(np.vdot(x - p, y - p)) < 1e-9
    # matrix-shaped x: flattened
    X = RNG.normal(size=(1, n))
    np.testing.assert_allclose(
        P.affine(A, b)(jnp.asarray(X)).ravel(), anchor + Pn @ (X.ravel() - anchor), atol=1e-10
    )


# ---------------------------------------------------------------- nonconvex sets


def test_sphere():
    r = 1.5
    proj = jax.jit(P.sphere(r))
    for _ in range(10):
        x = RNG.normal(size=N)
        p = np.asarray(proj(x))
        np.testing.assert_allclose(np.linalg.norm(p), r, atol=1e-12)
        np.testing.assert_allclose(p, r * x / np.linalg.norm(x), atol=1e-12)
        np.testing.assert_allclose(proj(p), p, atol=1e-12)
        ys = sample_l2(200, N, 1.0)
        ys = r * ys / np.linalg.norm(ys, axis=1, keepdims=True)
        assert np.all(np.linalg.norm(ys - x, axis=1) >= np.linalg.norm(p - x) - 1e-12)
    # the image of 0 is radius * e_1; the derivative there is finite
    np.testing.assert_array_equal(proj(jnp.zeros(3)), [r, 0.0, 0.0])
    np.testing.assert_array_equal(P.sphere()(jnp.zeros((2, 2))), [[1.0, 0.0], [0.0, 0.0]])
    out = P.sphere()({"a": jnp.zeros((0,)), "b": jnp.zeros(2)})
    np.testing.assert_array_equal(out["b"], [1.0, 0.0])
    g = jax.grad(lambda z: jnp.sum(proj(z)))(jnp.zeros(3))
    assert np.all(np.isfinite(g))
    tree = {"a": jnp.array([3.0]), "b": jnp.array([[-4.0]])}
    out = P.sphere(10.0)(tree)
    np.testing.assert_allclose(out["a"], [6.0])
    np.testing.assert_allclose(out["b"], [[-8.0]])


@pytest.mark.parametrize("shape", [(5, 3), (4, 4), (2, 5)])
def test_stiefel_vs_scipy_polar(shape):
    proj = jax.jit(P.stiefel())
    for _ in range(5):
        X = RNG.normal(size=shape)
        Q = np.asarray(proj(X))
        if shape[0] >= shape[1]:
            np.testing.assert_allclose(Q, scipy.linalg.polar(X, side="right")[0], atol=1e-10)
            np.testing.assert_allclose(Q.T @ Q, np.eye(shape[1]), atol=1e-12)
        else:
            np.testing.assert_allclose(Q, scipy.linalg.polar(X.T)[0].T, atol=1e-10)
            np.testing.assert_allclose(Q @ Q.T, np.eye(shape[0]), atol=1e-12)
        np.testing.assert_allclose(proj(Q), Q, atol=1e-12)
        # nearest among random points of the manifold
        Ys = [scipy.linalg.polar(RNG.normal(size=shape).T)[0].T if shape[0] < shape[1]
              else scipy.linalg.polar(RNG.normal(size=shape))[0] for _ in range(20)]
        for Y in Ys:
            assert np.linalg.norm(X - Y) >= np.linalg.norm(X - Q) - 1e-12


def test_stiefel_derivative():
    proj = P.stiefel()
    X = jnp.asarray(RNG.normal(size=(5, 3)))
    dX = jnp.asarray(RNG.normal(size=(5, 3)))
    _, jvp = jax.jvp(proj, (X,), (dX,))
    eps = 1e-6
    fd = (proj(X + eps * dX) - proj(X - eps * dX)) / (2 * eps)
    np.testing.assert_allclose(jvp, fd, atol=1e-7)
    # square case
    X = jnp.asarray(RNG.normal(size=(4, 4)))
    dX = jnp.asarray(RNG.normal(size=(4, 4)))
    _, jvp = jax.jvp(proj, (X,), (dX,))
    fd = (proj(X + eps * dX) - proj(X - eps * dX)) / (2 * eps)
    np.testing.assert_allclose(jvp, fd, atol=1e-7)
    # at a point of the manifold (all singular values 1): finite, and the tangent
    # part of a perturbation passes through: dQ = Q skew(Q^T dX) + (I - QQ^T) dX
    Q = proj(jnp.asarray(RNG.normal(size=(5, 3))))
    g = jax.grad(lambda Z: jnp.sum(proj(Z) * jnp.arange(15.0).reshape(5, 3)))(Q)
    assert np.all(np.isfinite(g))
    dT = jnp.asarray(RNG.normal(size=(5, 3)))
    _, jvp = jax.jvp(proj, (Q,), (dT,))
    K = Q.T @ dT
    expected = Q @ (K - K.T) / 2 + (jnp.eye(5) - Q @ Q.T) @ dT
    np.testing.assert_allclose(jvp, expected, atol=1e-12)


def test_psd_vs_eigh():
    proj = jax.jit(P.psd())
    for _ in range(10):
        X = RNG.normal(size=(5, 5))
        S = (X + X.T) / 2
        w, V = np.linalg.eigh(S)
        ref = V @ np.diag(np.maximum(w, 0)) @ V.T
        p = np.asarray(proj(X))
        np.testing.assert_allclose(p, ref, atol=1e-12)
        np.testing.assert_allclose(p, p.T, atol=0)
        assert np.linalg.eigvalsh(p).min() >= -1e-12
        np.testing.assert_allclose(proj(p), p, atol=1e-12)
        # variational inequality for random PSD Y (Frobenius inner product)
        for _ in range(20):
            B = RNG.normal(size=(5, 2))
            Y = B @ B.T
            assert np.sum((X - p) * (Y - p)) <= 1e-8
        # KKT of the cone: p >= 0, p - S <= 0 ... i.e. S - p is NSD and <p, S - p> = 0
        assert np.linalg.eigvalsh(S - p).max() <= 1e-12
        assert abs(np.sum(p * (S - p))) < 1e-10


def test_psd_derivative():
    proj = P.psd()
    X = jnp.asarray(RNG.normal(size=(4, 4)))
    dX = jnp.asarray(RNG.normal(size=(4, 4)))
    _, jvp = jax.jvp(proj, (X,), (dX,))
    eps = 1e-6
    fd = (proj(X + eps * dX) - proj(X - eps * dX)) / (2 * eps)
    np.testing.assert_allclose(jvp, fd, atol=1e-7)
    # repeated eigenvalues: identity (derivative = symmetrisation) and zero
    _, jvp = jax.jvp(proj, (jnp.eye(4),), (dX,))
    np.testing.assert_allclose(jvp, (dX + dX.T) / 2, atol=1e-12)
    for X0 in (jnp.eye(4), jnp.zeros((4, 4)), jnp.diag(jnp.array([1.0, 1.0, -1.0, -1.0]))):
        g = jax.grad(lambda Z: jnp.sum(proj(Z) ** 2))(X0)
        assert np.all(np.isfinite(g))


# ------------------------------------------------------------- batching, dtypes, errors

BATCH_CASES = [
    ("box", lambda: P.box(-0.3, 0.4), (N,)),
    ("nonnegative", P.nonnegative, (N,)),
    ("simplex", P.simplex, (N,)),
    ("l1_ball", P.l1_ball, (N,)),
    ("l2_ball", P.l2_ball, (N,)),
    ("linf_ball", P.linf_ball, (N,)),
    ("affine", lambda: P.affine(np.ones((2, N)) + np.eye(2, N), np.array([1.0, 2.0])), (N,)),
    ("halfspace", lambda: P.halfspace(np.arange(N, dtype=float), 1.0), (N,)),
    ("sphere", P.sphere, (N,)),
    ("stiefel", P.stiefel, (4, 2)),
    ("psd", P.psd, (3, 3)),
]


@pytest.mark.parametrize("name,factory,shape", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_vmap_equals_loop_and_jit(name, factory, shape):
    proj = factory()
    X = jnp.asarray(RNG.normal(size=(6, *shape)) * 2)
    X = X.at[0].set(0.0)  # include the zero input
    batched = jax.jit(jax.vmap(proj))(X)
    loop = jnp.stack([proj(x) for x in X])
    np.testing.assert_allclose(batched, loop, atol=1e-12)
    assert np.all(np.isfinite(batched))
    # float32 in, float32 out
    out32 = proj(X[1].astype(jnp.float32))
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(out32, loop[1], atol=1e-5)


def test_matrix_sets_batch_natively():
    X = jnp.asarray(RNG.normal(size=(2, 3, 4, 2)))
    out = P.stiefel()(X)
    np.testing.assert_allclose(out[1, 2], P.stiefel()(X[1, 2]), atol=1e-12)
    S = jnp.asarray(RNG.normal(size=(3, 4, 4)))
    np.testing.assert_allclose(P.psd()(S)[2], P.psd()(S[2]), atol=1e-12)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="lower"):
        P.box(1.0, 0.0)
    with pytest.raises(ValueError, match="lower"):
        P.box({"a": jnp.zeros(2)}, {"a": jnp.array([1.0, -1.0])})
    for factory in (P.l1_ball, P.l2_ball, P.linf_ball, P.sphere, P.simplex):
        with pytest.raises(ValueError, match="must be >= 0"):
            factory(-1.0)
    with pytest.raises(ValueError, match="nonzero"):
        P.halfspace(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="entries"):
        P.halfspace(np.ones(3), 1.0)(jnp.ones(4))
    with pytest.raises(ValueError, match="columns"):
        P.affine(np.ones((2, 3)), np.ones(2))(jnp.ones(4))
    with pytest.raises(ValueError, match="shape"):
        P.affine(np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="matrix"):
        P.stiefel()(jnp.ones(3))
    with pytest.raises(ValueError, match="square"):
        P.psd()(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="axis"):
        P.simplex()(jnp.array(1.0))
    for proj in (P.simplex(), P.stiefel(), P.psd()):
        with pytest.raises(TypeError, match="must be an array"):
            proj({"a": jnp.ones((2, 2))})


def test_traced_parameters():
    """Factories accept traced parameters (e.g. a radius swept with vmap)."""
    x = jnp.asarray(RNG.normal(size=N)) * 3
    radii = jnp.array([0.5, 1.0, 2.0])
    out = jax.vmap(lambda r: P.l2_ball(r)(x))(radii)
    np.testing.assert_allclose(jnp.linalg.norm(out, axis=1), radii, atol=1e-12)
    out = jax.vmap(lambda r: P.l1_ball(r)(x))(radii)
    np.testing.assert_allclose(jnp.abs(out).sum(axis=1), radii, atol=1e-12)
    out = jax.vmap(lambda s: P.simplex(s)(x))(radii)
    np.testing.assert_allclose(out.sum(axis=1), radii, atol=1e-12)
    A = jnp.asarray(RNG.normal(size=(2, N)))
    b = jnp.array([1.0, -1.0])
    p = jax.jit(lambda A, b, x: P.affine(A, b)(x))(A, b, x)
    np.testing.assert_allclose(A @ p, b, atol=1e-12)
