"""jc.SQP on PyGRANSO's classic examples, DEFAULT settings, against independent references.

Every test runs `jc.SQP()` as it comes (at most `max_steps` is set) in float64 (conftest
enables x64; the float32 test passes float32 arrays) and checks the answer against an
analytic optimum or one computed here by a different method (see `tests/classic.py`).
Targets the solver does not meet yet are kept as stated and marked
`xfail` with the measured figure (not strict: these outcomes differ between machines
and XLA builds, e.g. float32 Rosenbrock passed on one fresh clone with max error 2.9e-5), so
a fix shows up as an XPASS in the report.

Each test prints one line of figures (status, f error, violation, iterations, time);
`pytest -s tests/test_sqp_classic.py` shows them.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc
import classic

SOLVER = jc.SQP()  # defaults only; no per-problem tuning


def _record(name: str, sol, f_ref: float, seconds: float, violation=None) -> None:
    """Print the figures the issue asks to record for one solve (or a batch: worst member)."""
    f = np.asarray(sol.f, np.float64)
    rel = np.max(np.abs(f - f_ref)) / max(abs(f_ref), 1e-300)
    viol = np.max(np.asarray(sol.stats.violation if violation is None else violation, np.float64))
    statuses = sorted({jc.Status(int(s)).name for s in np.atleast_1d(np.asarray(sol.status))})
    its = np.atleast_1d(np.asarray(sol.stats.iterations))
    print(
        f"\n[{name}] status={','.join(statuses)} rel_f_err={rel:.2e} violation={viol:.2e} "
        f"iterations={its.min()}..{its.max()} time={seconds:.1f}s"
    )


def _timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def _rel(f, f_ref):
    return np.abs(np.asarray(f, np.float64) - f_ref) / abs(f_ref)


# ------------------------------------------------------------------ 1-3: nonsmooth Rosenbrock

ROSEN = classic.rosenbrock()
N_BATCH = 256  # the first 20 rows are the 20 starts of test 1 (same generator, same seed)


@pytest.fixture(scope="module")
def rosen_single():
    """The single float64 solve, jitted once (compiled on first call)."""
    return jax.jit(lambda x0: jc.solve(ROSEN.problem, x0, SOLVER))


@pytest.fixture(scope="module")
def rosen_batch(rosen_single):
    """256 starts uniform in [-5, 5]² (seed 0), solved by one jitted `jax.vmap` call."""
    starts = jnp.asarray(classic.rosenbrock_starts(N_BATCH, seed=0))
    sols, seconds = _timed(jax.jit(jax.vmap(rosen_single)), starts)
    return starts, sols, seconds


def test_rosenbrock_20_starts(rosen_single, rosen_batch):
    """20 random starts (one vmapped call): every f within 1e-6 relative of
    f* = (1 - 1/√2)², violation <= 1e-8; three single solves give the same answers."""
    starts, batch, seconds = rosen_batch
    assert np.array_equal(starts[:20], classic.rosenbrock_starts(20, seed=0))
    sols = jax.tree_util.tree_map(lambda a: a[:20], batch)
    _record("rosenbrock 20 starts (vmap, of the 256-batch call)", sols, ROSEN.f_ref, seconds,
            classic.rosenbrock_violation(sols.x))
    rel = _rel(sols.f, ROSEN.f_ref)
    assert np.all(rel <= 1e-6), rel
    assert np.all(classic.rosenbrock_violation(sols.x) <= 1e-8)
    assert np.all(np.asarray(sols.stats.violation) <= 1e-8)
    np.testing.assert_allclose(sols.x, np.broadcast_to(ROSEN.data["x_star"], (20, 2)), atol=1e-4)
    for i in (0, 7, 13):
        single = rosen_single(starts[i])
        assert _rel(single.f, ROSEN.f_ref) <= 1e-6
        assert classic.rosenbrock_violation(single.x) <= 1e-8
        np.testing.assert_allclose(single.x, sols.x[i], rtol=0, atol=1e-8)
        assert int(single.status) == int(sols.status[i])


@pytest.mark.slow
def test_rosenbrock_float32():
    """Float32 from the same 20 starts: float32 x and f, every f within 1e-4 relative of f*,
    violation within 100 eps(float32)."""
    starts = jnp.asarray(classic.rosenbrock_starts(20, seed=0, dtype=np.float32))
    solve = jax.jit(jax.vmap(lambda x0: jc.solve(ROSEN.problem, x0, SOLVER)))
    sols, seconds = _timed(solve, starts)
    _record("rosenbrock float32 20 starts (vmap)", sols, ROSEN.f_ref, seconds,
            classic.rosenbrock_violation(sols.x))
    assert sols.x.dtype == jnp.float32
    assert sols.f.dtype == jnp.float32
    assert np.all(classic.rosenbrock_violation(sols.x) <= 100 * np.finfo(np.float32).eps)
    rel = _rel(sols.f, ROSEN.f_ref)
    for i in np.flatnonzero(rel > 1e-4):
        print(f"    start {i} {np.asarray(starts[i])}: {jc.Status(int(sols.status[i])).name} rel err {rel[i]:.2e}, "
              f"x {np.asarray(sols.x[i])}, iterations {int(sols.stats.iterations[i])}")
    assert np.all(rel <= 1e-4), rel


@pytest.fixture(scope="module")
def rosen_singles(rosen_single, rosen_batch):
    """The 256 starts of `rosen_batch` solved one at a time by the jitted single solve."""
    starts, _, _ = rosen_batch
    start = time.perf_counter()
    singles = [jax.block_until_ready(rosen_single(x0)) for x0 in starts]
    seconds = time.perf_counter() - start
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *singles), seconds


def test_rosenbrock_vmap_matches_single_solves(rosen_batch, rosen_singles):
    """256 instances under one `jax.vmap` give the points of 256 single (jitted) solves:
    x within 1e-8 (float64)."""
    _, batch, batch_seconds = rosen_batch
    singles, seconds = rosen_singles
    dx = np.max(np.abs(np.asarray(batch.x) - np.asarray(singles.x)), axis=1)
    _record(f"rosenbrock {N_BATCH} singles (vmap took {batch_seconds:.1f}s incl. compile)", singles,
            ROSEN.f_ref, seconds)
    print(f"    max |x_vmap - x_single| = {dx.max():.2e} (member {int(np.argmax(dx))}); "
          f"{int(np.sum(dx > 1e-12))} members differ by > 1e-12")
    np.testing.assert_allclose(batch.x, singles.x, rtol=0, atol=1e-8)


@pytest.mark.xfail(
    strict=False,  # the outcome differs between machines and XLA builds
    reason="measured (sqp.py md5 b42d30d2, 05:12 UTC): member 178 (x0 = [2.159, 4.011]) is "
    "CONVERGED in 13 iterations alone (stationarity 3.5e-17) but STALLED in 22 under vmap "
    "(stationarity 0.67) at the same x (|dx| = 3e-16); the version before (md5 e38a22ee) "
    "differed at member 148",
)
def test_rosenbrock_vmap_matches_single_statuses(rosen_batch, rosen_singles):
    """The 256 vmapped solves report the same statuses as the single solves."""
    _, batch, _ = rosen_batch
    singles, _ = rosen_singles
    differ = np.flatnonzero(np.asarray(batch.status) != np.asarray(singles.status))
    for i in differ:
        print(f"    member {i}: single {jc.Status(int(singles.status[i])).name} "
              f"({int(singles.stats.iterations[i])} it, stationarity {float(singles.stats.stationarity[i]):.1e}), "
              f"vmap {jc.Status(int(batch.status[i])).name} ({int(batch.stats.iterations[i])} it, "
              f"stationarity {float(batch.stats.stationarity[i]):.1e})")
    np.testing.assert_array_equal(batch.status, singles.status)


# ------------------------------------------------------------------ 4-5: eigenvalue problems


@pytest.mark.slow
def test_rayleigh_quotient_n300():
    """min xᵀAx s.t. xᵀx = 1, n = 300: f = λ_min(A) (numpy eigvalsh) to 1e-6 relative,
    and the constraint to viol_tol (1e-6)."""
    c = classic.rayleigh(n=300)
    sol, seconds = _timed(jax.jit(lambda x0: jc.solve(c.problem, x0, SOLVER)), c.x0)
    _record(c.name, sol, c.f_ref, seconds)
    x = np.asarray(sol.x)
    assert abs(x @ x - 1.0) <= 1e-6
    assert _rel(sol.f, c.f_ref) <= 1e-6
    np.testing.assert_allclose(sol.f, x @ c.data["A"] @ x, rtol=1e-12)


@pytest.mark.parametrize("d", [1, 2])
def test_trace_optimisation(d):
    """min -tr(XᵀAX) s.t. XᵀX = I (X 30 x d, the full d x d constraint as in PyGRANSO):
    f = -(sum of the d largest eigenvalues) to 1e-6 relative, XᵀX = I to 1e-6."""
    c = classic.trace(n=30, d=d)
    sol, seconds = _timed(jax.jit(lambda x0: jc.solve(c.problem, x0, SOLVER)), c.x0)
    _record(c.name, sol, c.f_ref, seconds)
    X = np.asarray(sol.x)
    assert np.max(np.abs(X.T @ X - np.eye(d))) <= 1e-6
    assert _rel(sol.f, c.f_ref) <= 1e-6


# ------------------------------------------------------------------ 6: dictionary learning

DL = classic.dictionary_learning()


@pytest.fixture(scope="module")
def dl_single():
    return jax.jit(lambda q0: jc.solve(DL.problem, q0, SOLVER))


def _dl_check(sol):
    """(feasibility error, |q - local min|, relative f error) against the local minimum,
    computed by LP iteration from ±Q0[:, i] (`classic.dl_local_minimum`), nearest to q."""
    minima, values = DL.data["local_minima"], DL.data["local_values"]
    q = np.asarray(sol.x)
    j = int(np.argmax(minima @ q))
    return (abs(np.linalg.norm(q) - 1.0), np.max(np.abs(q - minima[j])),
            abs(float(sol.f) - values[j]) / values[j])


def test_dictionary_learning(dl_single):
    """min ||qᵀY||_1/m s.t. ||q||² = 1 (n = 10, m = 300, Y = Q0 X, X Bernoulli(0.3)-Gaussian)
    from the example's x0: | ||q|| - 1 | <= 1e-8, and q is the local minimum of its basin
    (one of the 2n minima computed independently by LP iteration from ±Q0[:, i]): q within
    1e-6 of it, f within 1e-6 relative. (The global minimum is a different column:
    a local method is only asked for a local minimum here; see the random-starts test.)"""
    sol, seconds = _timed(dl_single, DL.x0)
    feas, dq, rel = _dl_check(sol)
    _record(DL.name, sol, DL.f_ref, seconds)
    print(f"    vs own local minimum: rel f err {rel:.2e}, max|q - q_loc| {dq:.2e}, | ||q|| - 1 | {feas:.2e}")
    assert feas <= 1e-8
    assert dq <= 1e-6
    assert rel <= 1e-6


DL_STARTS = 8


@pytest.mark.xfail(
    strict=False,  # the outcome differs between machines and XLA builds
    reason="measured (sqp.py md5 b42d30d2, 05:20 UTC): only start 0 reaches a local minimum; "
    "the other 7 end STALLED (1, 3, 5, 6, 7) or MAX_STEPS (2, 4) at f 0.4-52% above the nearest "
    "local minimum (start 6: mu driven 1 -> 8e-8 in 26 iterations, stationarity 3.6e-2). "
    "md5 5b9c9e88/e38a22ee: 4/8 (starts 0, 2, 3, 7)",
)
def test_dictionary_learning_random_starts(dl_single):
    """The same from 8 random unit starts (seed 1; start 0 is the example's x0): every solve
    feasible to 1e-8 and on a local minimum (q within 1e-6, f within 1e-6 relative); the
    best of them reaches the global reference (best of the 2n LP-refined minima) to 1e-6."""
    rng = np.random.default_rng(1)
    starts = rng.standard_normal((DL_STARTS, DL.x0.shape[0]))
    starts /= np.linalg.norm(starts, axis=1, keepdims=True)
    starts[0] = np.asarray(DL.x0)
    start = time.perf_counter()
    sols = [jax.block_until_ready(dl_single(jnp.asarray(q0))) for q0 in starts]
    seconds = time.perf_counter() - start
    checks = np.array([_dl_check(s) for s in sols])
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *sols)
    _record(f"{DL.name} ({DL_STARTS} starts)", stacked, DL.f_ref, seconds)
    for i, (s, (feas, dq, rel)) in enumerate(zip(sols, checks)):
        print(f"    start {i}: {jc.Status(int(s.status)).name:9s} f {float(s.f):.10f} rel err vs own "
              f"local min {rel:.2e}, max|q - q_loc| {dq:.2e}, iterations {int(s.stats.iterations)}")
    assert np.all(checks[:, 0] <= 1e-8)
    best = min(float(s.f) for s in sols)
    assert abs(best - DL.f_ref) <= 1e-6 * DL.f_ref
    assert np.all(checks[:, 1] <= 1e-6), checks[:, 1]
    assert np.all(checks[:, 2] <= 1e-6), checks[:, 2]


# ------------------------------------------------------------------ 7: robust PCA


@pytest.mark.slow
def test_robust_pca():
    """min ||M||_* + λ||S||_1 s.t. M + S = Y (10 x 10, rank 1 + 10 spikes, λ = 1/√10).
    The planted split is certified optimal by a dual certificate (`classic.rpca_certificate`);
    f within 1e-6 relative of it and M + S = Y to 1e-6."""
    c = classic.robust_pca()
    sol, seconds = _timed(jax.jit(lambda x0: jc.solve(c.problem, x0, SOLVER)), c.x0)
    _record(c.name, sol, c.f_ref, seconds)
    M, S = np.asarray(sol.x["M"]), np.asarray(sol.x["S"])
    print(f"    max|M - L0| = {np.max(np.abs(M - c.data['L0'])):.2e}, max|S - S0| = "
          f"{np.max(np.abs(S - c.data['S0'])):.2e}")
    assert np.max(np.abs(M + S - c.data["Y"])) <= 1e-6
    assert _rel(sol.f, c.f_ref) <= 1e-6
    np.testing.assert_allclose(sol.f, classic.rpca_objective_np(M, S, c.data["lam"]), rtol=1e-12)


# ------------------------------------------------------------------ 8: TV-LASSO


def test_tv_lasso():
    """min ½||Ax - b||² + λ||Dx||_1 (n = 30, unconstrained, nonsmooth): f within 1e-6
    relative of the reference from ADMM + a certified active-set KKT solve."""
    c = classic.tv_lasso()
    assert c.data["certified"]
    sol, seconds = _timed(jax.jit(lambda x0: jc.solve(c.problem, x0, SOLVER)), c.x0)
    _record(c.name, sol, c.f_ref, seconds)
    print(f"    max|x - x_ref| = {np.max(np.abs(np.asarray(sol.x) - c.data['x_ref'])):.2e}")
    assert _rel(sol.f, c.f_ref) <= 1e-6
