"""Limited-memory inverse BFGS: agreement with the dense damped update, the two-loop
recursion, ring-buffer wrap-around, skipped updates, vmap, dtypes, and a quadratic."""

import jax
import jax.numpy as jnp
import numpy as np

from jconstrain import _bfgs as bfgs, _lbfgs as lbfgs

update = jax.jit(lbfgs.update, static_argnames="rescale")
apply = jax.jit(lbfgs.apply)
dense = jax.jit(lbfgs.dense)
inverse_update = jax.jit(bfgs.inverse_update)
N, M = 8, 4  # shared shapes, so the jitted functions compile once for most tests


def _pairs(rng, n, k, convex_fraction=0.5):
    """k random pairs: some with y = A s (A SPD), the rest with an indefinite curvature."""
    A = rng.normal(size=(n, n))
    A = A @ A.T / n + 0.1 * np.eye(n)
    B = rng.normal(size=(n, n))
    B = 0.5 * (B + B.T)
    pairs = []
    for i in range(k):
        s = rng.normal(size=n)
        y = (A if rng.random() < convex_fraction else B) @ s
        pairs.append((jnp.asarray(s), jnp.asarray(y)))
    return pairs


def _two_loop(S, Y, gamma, v):
    """Nocedal-Wright Algorithm 7.4 in numpy; S, Y list pairs oldest first."""
    rho = [1.0 / (s @ y) for s, y in zip(S, Y)]
    q = v.copy()
    alpha = [0.0] * len(S)
    for i in reversed(range(len(S))):
        alpha[i] = rho[i] * (S[i] @ q)
        q = q - alpha[i] * Y[i]
    r = gamma * q
    for i in range(len(S)):
        beta = rho[i] * (Y[i] @ r)
        r = r + (alpha[i] - beta) * S[i]
    return r


def test_full_memory_matches_the_dense_damped_update():
    rng = np.random.default_rng(0)
    n, k = N, 12
    mem = lbfgs.init(n, memory=k)
    H = jnp.eye(n)
    damped_any = False
    for i, (s, y) in enumerate(_pairs(rng, n, k)):
        H, info_dense = inverse_update(H, s, y, 1e-4, i == 0)
        mem, info = update(mem, s, y, 1e-4)
        assert bool(info.applied) and bool(info_dense.applied)
        assert bool(info.damped) == bool(info_dense.damped)
        damped_any |= bool(info.damped)
        np.testing.assert_allclose(dense(mem), H, rtol=0, atol=1e-10 * float(jnp.max(jnp.abs(H))))
    assert damped_any  # the indefinite pairs exercised the damping
    # The secant equation for the last (damped) pair: H y = s̃.
    j = (int(mem.next) - 1) % k
    np.testing.assert_allclose(apply(mem, mem.Y[j]), mem.S[j], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dense(mem) @ mem.Y[j], mem.S[j], rtol=1e-10, atol=1e-12)


def test_apply_is_dense_times_v_for_vectors_and_matrices():
    rng = np.random.default_rng(1)
    n = N
    mem = lbfgs.init(n, memory=M)
    for s, y in _pairs(rng, n, 6):
        mem, _ = update(mem, s, y)
    H = dense(mem)
    v = jnp.asarray(rng.normal(size=n))
    V = jnp.asarray(rng.normal(size=(n, 3)))
    np.testing.assert_allclose(apply(mem, v), H @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(apply(mem, V), H @ V, rtol=1e-12, atol=1e-12)
    # An empty memory is the identity.
    np.testing.assert_allclose(dense(lbfgs.init(n, 3)), np.eye(n))


def test_positive_definite_after_many_damped_nonconvex_updates():
    rng = np.random.default_rng(2)
    n = N
    mem = lbfgs.init(n, memory=M)
    n_damped = 0
    for s, y in _pairs(rng, n, 60, convex_fraction=0.2):
        mem, info = update(mem, s, y)
        assert bool(info.applied)
        n_damped += int(info.damped)
    assert n_damped > 10
    assert float(jnp.min(jnp.linalg.eigvalsh(dense(mem)))) > 0
    assert bool(jnp.all(mem.rho > 0))


def test_wraparound_keeps_the_last_m_pairs():
    rng = np.random.default_rng(3)
    n, m, k = N, M, 11
    mem = lbfgs.init(n, memory=m)
    pairs = _pairs(rng, n, k, convex_fraction=1.0)
    for s, y in pairs:
        mem, info = update(mem, s, y)
        assert bool(info.applied) and not bool(info.damped)
    assert int(mem.count) == k and int(mem.next) == k % m
    S = [np.asarray(s) for s, _ in pairs[-m:]]
    Y = [np.asarray(y) for _, y in pairs[-m:]]
    s0, y0 = (np.asarray(a) for a in pairs[0])
    gamma = (s0 @ y0) / (y0 @ y0)  # set by the first update, kept afterwards
    np.testing.assert_allclose(float(mem.gamma), gamma, rtol=1e-14)
    for _ in range(3):
        v = rng.normal(size=n)
        np.testing.assert_allclose(apply(mem, jnp.asarray(v)), _two_loop(S, Y, gamma, v), rtol=1e-10, atol=1e-12)


def test_rescale_resets_gamma_every_update():
    rng = np.random.default_rng(4)
    n = N
    mem = lbfgs.init(n, memory=M)
    for s, y in _pairs(rng, n, 5, convex_fraction=1.0):
        mem, info = update(mem, s, y, rescale=True)
        assert not bool(info.damped)
    s, y = np.asarray(s), np.asarray(y)
    np.testing.assert_allclose(float(mem.gamma), (s @ y) / (y @ y), rtol=1e-14)


def test_non_finite_updates_are_skipped():
    rng = np.random.default_rng(5)
    n = N
    pairs = _pairs(rng, n, M + 1, convex_fraction=1.0)
    empty = lbfgs.init(n, memory=M)
    mem = empty
    for s, y in pairs:
        mem, _ = update(mem, s, y)
    s, y = pairs[0]
    for start in (empty, mem):  # skipped at the first update and on a wrapped memory
        for bad_s, bad_y in ((s, y.at[2].set(jnp.nan)), (s, y.at[0].set(jnp.inf)), (s.at[1].set(jnp.nan), y)):
            new, info = update(start, bad_s, bad_y)
            assert not bool(info.applied) and not bool(info.damped)
            jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), new, start)
    new, info = update(mem, s, -y)  # s̃ᵀy <= 0 cannot survive the damping: applied, damped
    assert bool(info.applied) and bool(info.damped) and float(new.rho[(int(new.next) - 1) % M]) > 0
    new, info = update(mem, jnp.zeros(n), jnp.zeros(n))  # y = 0: s̃ᵀy = 0, skipped
    assert not bool(info.applied)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), new, mem)


def test_vmap_over_a_batch_of_memories():
    rng = np.random.default_rng(6)
    n, m, batch, k = N, M, 5, 6
    mems = jax.vmap(lambda _: lbfgs.init(n, memory=m))(jnp.arange(batch))
    S = jnp.asarray(rng.normal(size=(k, batch, n)))
    Ys = []
    for b in range(batch):
        A = rng.normal(size=(n, n))
        Ys.append(np.asarray(S[:, b]) @ (A @ A.T + np.eye(n)) if b % 2 else np.asarray(S[:, b]) @ (A + A.T))
    Y = jnp.asarray(np.stack(Ys, axis=1))
    batched_update = jax.jit(jax.vmap(lbfgs.update, in_axes=(0, 0, 0, None)))
    for i in range(k):
        mems, infos = batched_update(mems, S[i], Y[i], 1e-4)
    V = jnp.asarray(rng.normal(size=(batch, n)))
    HV = jax.jit(jax.vmap(lbfgs.apply))(mems, V)
    for b in range(batch):
        mem = lbfgs.init(n, memory=m)
        for i in range(k):
            mem, _ = update(mem, S[i, b], Y[i, b])
        np.testing.assert_allclose(HV[b], apply(mem, V[b]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(mems.gamma[b], mem.gamma, rtol=1e-14)


def test_float32_stays_float32():
    rng = np.random.default_rng(7)
    n = N
    mem = lbfgs.init(n, memory=M, dtype=jnp.float32)
    for s, y in _pairs(rng, n, 5):
        mem, info = update(mem, s.astype(jnp.float32), y.astype(jnp.float32))
    for leaf in (mem.S, mem.Y, mem.rho, mem.gamma):
        assert leaf.dtype == jnp.float32
    assert mem.count.dtype == jnp.int32
    v = jnp.ones(n, jnp.float32)
    assert apply(mem, v).dtype == jnp.float32
    assert dense(mem).dtype == jnp.float32
    np.testing.assert_allclose(apply(mem, v), dense(mem) @ v, rtol=1e-4, atol=1e-5)


def test_lbfgs_with_exact_line_search_minimises_a_convex_quadratic():
    rng = np.random.default_rng(8)
    n = 50
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = jnp.asarray(Q @ np.diag(np.logspace(0, 3, n)) @ Q.T)
    b = jnp.asarray(rng.normal(size=n))
    x_star = jnp.linalg.solve(A, b)

    @jax.jit
    def step(x, mem):
        g = A @ x - b
        d = -lbfgs.apply(mem, g)
        t = -jnp.dot(g, d) / jnp.dot(d, A @ d)
        s = t * d
        mem, _ = lbfgs.update(mem, s, A @ s)
        return x + s, mem

    x, mem = jnp.zeros(n), lbfgs.init(n, memory=10)
    for _ in range(200):
        x, mem = step(x, mem)
        if float(jnp.linalg.norm(A @ x - b)) < 1e-9 * float(jnp.linalg.norm(b)):
            break
    np.testing.assert_allclose(x, x_star, rtol=0, atol=1e-8 * float(jnp.max(jnp.abs(x_star))))
    assert int(mem.count) < 200
