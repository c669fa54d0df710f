"""`jc.qp.solve` against SciPy (SLSQP refined on its active set, linprog/HiGHS), its own
KKT conditions, infeasibility certificates, vmap/jit, float32 and warm starts.

Compilation dominates the run time, so the tests share a few shapes: most use the
"standard" shape (n, m_eq, m_ineq) = (12, 5, 10), the infeasibility tests one vmapped
batch of shape (5, 0, 12).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jconstrain import qp
from jconstrain.qp import QPSolution, QPStatus

jax.config.update("jax_enable_x64", True)

STANDARD = (12, 5, 10)
NAMES = ("Q", "c", "A_eq", "b_eq", "A_ineq", "b_ineq", "lower", "upper")


# ------------------------------------------------------------------------ problems


def random_qp(rng, n, m_eq, m_in, *, rank=None, redundant=0):
    """A feasible convex QP: x0 is feasible, some bounds are infinite.

    Q = L L^T / n (+ 0.1 I unless `rank` is given: then Q is singular of that rank);
    the last `redundant` equality rows are combinations of the others.
    """
    L = rng.standard_normal((n, rank or n))
    Q = L @ L.T / n + (0.0 if rank else 0.1) * np.eye(n)
    x0 = rng.standard_normal(n)
    A_eq = rng.standard_normal((m_eq - redundant, n))
    A_eq = np.vstack([A_eq, rng.standard_normal((redundant, m_eq - redundant)) @ A_eq])
    A_in = rng.standard_normal((m_in, n))
    lower = x0 - rng.uniform(0.1, 1.0, n)
    upper = x0 + rng.uniform(0.1, 1.0, n)
    lower[rng.random(n) < 0.3] = -np.inf
    upper[rng.random(n) < 0.3] = np.inf
    return dict(
        Q=Q, c=5.0 * rng.standard_normal(n), A_eq=A_eq, b_eq=A_eq @ x0,
        A_ineq=A_in, b_ineq=A_in @ x0 + rng.uniform(0.0, 1.0, m_in), lower=lower, upper=upper,
    )


def args(p):
    return [p[k] for k in NAMES]


def stack(problems):
    return [np.stack([p[k] for p in problems]) for k in NAMES]


def member(sol, i):
    return jax.tree_util.tree_map(lambda v: v[i], sol)


# ---------------------------------------------------------------------- references


def kkt_errors(p, sol):
    """Stationarity, primal violation, complementarity and sign errors of a QPSolution."""
    x, y, yi, zl, zu = (np.asarray(v, float) for v in (sol.x, sol.y_eq, sol.y_ineq, sol.z_lower, sol.z_upper))
    stat = p["Q"] @ x + p["c"] + p["A_eq"].T @ y + p["A_ineq"].T @ yi - zl + zu
    fl, fu = np.isfinite(p["lower"]), np.isfinite(p["upper"])
    slack_in = p["b_ineq"] - p["A_ineq"] @ x
    slack_lo = np.where(fl, x - np.where(fl, p["lower"], 0.0), 0.0)
    slack_up = np.where(fu, np.where(fu, p["upper"], 0.0) - x, 0.0)
    viol = np.concatenate([np.abs(p["A_eq"] @ x - p["b_eq"]), -slack_in, -slack_lo, -slack_up, [0.0]])
    comp = np.concatenate([yi * slack_in, zl * slack_lo, zu * slack_up, [0.0]])
    return dict(
        stationarity=np.abs(stat).max(),
        violation=max(viol.max(), 0.0),
        complementarity=np.abs(comp).max(),
        min_multiplier=min(yi.min(initial=0.0), zl.min(), zu.min()),
        infinite_bound_multiplier=np.abs(np.concatenate([zl[~fl], zu[~fu], [0.0]])).max(),
    )


def reference_qp(p):
    """The exact minimiser of a strictly convex QP: SLSQP's active set, then its KKT system.

    The equality-constrained QP on SLSQP's active set is solved directly, and the
    result is accepted only if it is feasible and its multipliers have the right signs
    (so it is the optimum, whatever SLSQP's own accuracy).
    """
    n = len(p["c"])
    fl, fu = np.isfinite(p["lower"]), np.isfinite(p["upper"])
    res = scipy.optimize.minimize(
        lambda x: 0.5 * x @ p["Q"] @ x + p["c"] @ x,
        np.zeros(n),
        jac=lambda x: p["Q"] @ x + p["c"],
        method="SLSQP",
        bounds=[(lo if f else None, up if g else None) for lo, up, f, g in zip(p["lower"], p["upper"], fl, fu)],
        constraints=[
            dict(type="eq", fun=lambda x: p["A_eq"] @ x - p["b_eq"], jac=lambda x: p["A_eq"]),
            dict(type="ineq", fun=lambda x: p["b_ineq"] - p["A_ineq"] @ x, jac=lambda x: -p["A_ineq"]),
        ],
        options=dict(ftol=1e-15, maxiter=1000),
    )
    x = res.x
    eye = np.eye(n)
    act_in = np.abs(p["b_ineq"] - p["A_ineq"] @ x) < 1e-7
    act_lo = fl & (np.abs(x - np.where(fl, p["lower"], 0)) < 1e-7)
    act_up = fu & (np.abs(x - np.where(fu, p["upper"], 0)) < 1e-7)
    A = np.vstack([p["A_eq"], p["A_ineq"][act_in], -eye[act_lo], eye[act_up]])
    b = np.concatenate([p["b_eq"], p["b_ineq"][act_in], -p["lower"][act_lo], p["upper"][act_up]])
    K = np.block([[p["Q"], A.T], [A, np.zeros((len(b), len(b)))]])
    sol = np.linalg.lstsq(K, np.concatenate([-p["c"], b]), rcond=None)[0]
    x, mult = sol[:n], sol[n + len(p["b_eq"]) :]
    assert mult.min(initial=0.0) > -1e-9, "reference: SLSQP's active set has a wrong-signed multiplier"
    assert (p["A_ineq"] @ x - p["b_ineq"]).max(initial=-1) < 1e-9
    assert np.all(x[fl] >= p["lower"][fl] - 1e-9) and np.all(x[fu] <= p["upper"][fu] + 1e-9)
    return x, 0.5 * x @ p["Q"] @ x + p["c"] @ x


def assert_solved_exactly(p, sol):
    assert int(sol.status) == QPStatus.SOLVED
    e = kkt_errors(p, sol)
    assert e["stationarity"] < 1e-8 and e["violation"] < 1e-9 and e["complementarity"] < 1e-8, e
    assert e["min_multiplier"] >= 0.0 and e["infinite_bound_multiplier"] == 0.0, e
    np.testing.assert_allclose(float(sol.primal_residual), e["violation"], atol=1e-12)
    x = np.asarray(sol.x)
    assert abs(float(sol.objective) - (0.5 * x @ p["Q"] @ x + p["c"] @ x)) < 1e-10 * (1 + abs(float(sol.objective)))


# ------------------------------------------------------------ accuracy vs references


@pytest.fixture(scope="module")
def batch():
    """32 random feasible QPs of the standard shape and their jit(vmap(qp.solve)) solutions."""
    rng = np.random.default_rng(0)
    problems = [random_qp(rng, *STANDARD) for _ in range(32)]
    return problems, jax.jit(jax.vmap(qp.solve))(*stack(problems))


def test_random_strictly_convex_qps_match_scipy(batch):
    problems, sols = batch
    assert int(np.max(sols.iterations)) <= 20
    for i, p in enumerate(problems):
        sol = member(sols, i)
        assert_solved_exactly(p, sol)
        if i < 6:
            x_ref, f_ref = reference_qp(p)
            np.testing.assert_allclose(sol.x, x_ref, atol=1e-8)
            assert abs(float(sol.objective) - f_ref) <= 1e-10 * max(1.0, abs(f_ref))


def test_lp_matches_linprog():
    """LPs (Q = 0, shared) with a bounded optimum, vmapped, against HiGHS."""
    rng = np.random.default_rng(1)
    n, m_eq, m_in, B = 20, 4, 30, 10
    problems, refs = [], []
    for _ in range(B):
        x0 = rng.standard_normal(n)
        A_eq, A_in = rng.standard_normal((m_eq, n)), rng.standard_normal((m_in, n))
        lower, upper = x0 - 2.0, x0 + 2.0
        upper[rng.random(n) < 0.5] = np.inf
        p = dict(Q=np.zeros((n, n)), c=rng.standard_normal(n), A_eq=A_eq, b_eq=A_eq @ x0,
                 A_ineq=A_in, b_ineq=A_in @ x0 + rng.uniform(0.1, 1.0, m_in), lower=lower, upper=upper)
        ref = scipy.optimize.linprog(
            p["c"], A_ub=A_in, b_ub=p["b_ineq"], A_eq=A_eq, b_eq=p["b_eq"],
            bounds=[(lo, None if np.isinf(up) else up) for lo, up in zip(lower, upper)], method="highs",
        )
        if ref.status == 0:
            problems.append(p)
            refs.append(ref)
    assert len(problems) >= 6
    solve = jax.jit(jax.vmap(qp.solve, in_axes=(None, 0, 0, 0, 0, 0, 0, 0)))
    batch = stack(problems)
    sols = solve(np.zeros((n, n)), *batch[1:])
    for i, (p, ref) in enumerate(zip(problems, refs)):
        sol = member(sols, i)
        assert_solved_exactly(p, sol)
        assert abs(float(sol.objective) - ref.fun) <= 1e-8 * max(1.0, abs(ref.fun))
        np.testing.assert_allclose(sol.x, ref.x, atol=1e-6)


def test_degenerate_redundant_equalities_and_singular_q():
    rng = np.random.default_rng(2)
    for kwargs in [dict(redundant=2), dict(rank=3), dict(rank=4, redundant=1)]:
        p = random_qp(rng, *STANDARD, **kwargs)
        sol = qp.solve(*args(p))
        assert_solved_exactly(p, sol)
        if "rank" not in kwargs:  # strictly convex: compare with the problem without the copies
            m = STANDARD[1] - kwargs["redundant"]
            np.testing.assert_allclose(sol.x, reference_qp(dict(p, A_eq=p["A_eq"][:m], b_eq=p["b_eq"][:m]))[0], atol=1e-7)


def test_singular_q_with_unique_optimum():
    """min (x0 + x1)^2 / 2 - 2 x0 + x1 + x2 over [0, 1]^3: Q is singular (rank 1), the
    optimum (1, 0, 0) is unique with multipliers z_upper0 = 1, z_lower1 = 2, z_lower2 = 1."""
    Q = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    sol = qp.solve(Q, np.array([-2.0, 1.0, 1.0]), lower=np.zeros(3), upper=np.ones(3))
    assert int(sol.status) == QPStatus.SOLVED
    np.testing.assert_allclose(sol.x, [1.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(sol.z_upper, [1.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(sol.z_lower, [0.0, 2.0, 1.0], atol=1e-9)


def test_badly_scaled_data():
    """Rescaling variables and rows by 1e-6..1e6 changes nothing after unscaling."""
    rng = np.random.default_rng(3)
    p = random_qp(rng, *STANDARD)
    d = 10.0 ** rng.uniform(-6, 6, STANDARD[0])
    e_eq, e_in = 10.0 ** rng.uniform(-6, 6, STANDARD[1]), 10.0 ** rng.uniform(-6, 6, STANDARD[2])
    scaled = dict(
        Q=d[:, None] * p["Q"] * d, c=d * p["c"], A_eq=e_eq[:, None] * p["A_eq"] * d, b_eq=e_eq * p["b_eq"],
        A_ineq=e_in[:, None] * p["A_ineq"] * d, b_ineq=e_in * p["b_ineq"], lower=p["lower"] / d, upper=p["upper"] / d,
    )
    ref = qp.solve(*args(p))
    sol = qp.solve(*args(scaled))
    assert int(sol.status) == QPStatus.SOLVED
    np.testing.assert_allclose(d * np.asarray(sol.x), ref.x, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(float(sol.objective), float(ref.objective), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(sol.y_eq) * e_eq, ref.y_eq, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(np.asarray(sol.z_lower) / d, ref.z_lower, rtol=1e-7, atol=1e-8)


def test_empty_constraints_and_infinite_bounds():
    Q, c = np.diag([2.0, 4.0, 1.0]), np.array([2.0, -4.0, 0.5])
    expected = -c / np.diag(Q)
    zero_rows = np.zeros((0, 3)), np.zeros(0)
    for kwargs in [{}, dict(A_eq=zero_rows[0], b_eq=zero_rows[1], A_ineq=zero_rows[0], b_ineq=zero_rows[1]),
                   dict(lower=np.full(3, -np.inf), upper=np.full(3, np.inf))]:
        sol = qp.solve(Q, c, **kwargs)
        assert int(sol.status) == QPStatus.SOLVED
        np.testing.assert_allclose(sol.x, expected, atol=1e-10)
        assert sol.y_eq.shape == (0,) and sol.y_ineq.shape == (0,)
        np.testing.assert_array_equal(sol.z_lower, 0.0)
    # One finite bound among infinite ones: x1 <= 0.5 binds, 4 x1 - 4 + z_upper1 = 0.
    sol = qp.solve(Q, c, upper=np.array([np.inf, 0.5, np.inf]))
    np.testing.assert_allclose(sol.x, [-1.0, 0.5, -0.5], atol=1e-10)
    np.testing.assert_allclose(sol.z_upper, [0.0, 2.0, 0.0], atol=1e-9)


def test_bound_active_with_zero_multiplier_is_exact():
    """min |x|^2 / 2 + x0 - x1 over x >= 0: x2 = 0 sits on its bound with a zero
    multiplier (no strict complementarity), where an interior point only converges
    like sqrt(mu); polishing on the active set makes the answer exact."""
    sol = qp.solve(np.eye(3), np.array([1.0, -1.0, 0.0]), lower=np.zeros(3))
    assert int(sol.status) == QPStatus.SOLVED
    np.testing.assert_allclose(sol.x, [0.0, 1.0, 0.0], atol=1e-14)
    np.testing.assert_allclose(sol.z_lower, [1.0, 0.0, 0.0], atol=1e-14)


# ------------------------------------------------------------------- infeasibility


def _margin(A, b):
    """min t s.t. A x <= b + t (t >= -10): > 0 iff {A x <= b} is empty."""
    n, m = A.shape[1], A.shape[0]
    res = scipy.optimize.linprog(
        np.r_[np.zeros(n), 1.0], A_ub=np.c_[A, -np.ones(m)], b_ub=b, bounds=[(None, None)] * n + [(-10, None)]
    )
    return res.x[-1]


def test_infeasible_and_unbounded_batch_against_linprog():
    """One vmapped batch of shape (5, 0, 12): random polyhedra (feasible or not, by
    linprog phase 1), unbounded LPs, and hand-made contradictions."""
    rng = np.random.default_rng(4)
    n, m = 5, 12
    inf = np.full(n, np.inf)
    problems, expected = [], []
    while len(problems) < 24:  # random polyhedra, clearly feasible or clearly not
        A, b = rng.standard_normal((m, n)), rng.standard_normal(m) - 0.3
        t = _margin(A, b)
        if abs(t) > 1e-3:
            problems.append(dict(Q=np.eye(n), c=rng.standard_normal(n), A_ineq=A, b_ineq=b, lower=-inf, upper=inf))
            expected.append(QPStatus.PRIMAL_INFEASIBLE if t > 0 else QPStatus.SOLVED)
    for _ in range(8):  # LPs: unbounded along e0 (A e0 <= 0, c0 < 0, x = 0 feasible), or bounded by a box
        A = rng.standard_normal((m, n))
        A[:, 0] = -np.abs(A[:, 0])
        c = rng.standard_normal(n)
        c[0] = -abs(c[0]) - 0.1
        boxed = len(problems) % 2 == 0
        p = dict(Q=np.zeros((n, n)), c=c, A_ineq=A, b_ineq=rng.uniform(0.1, 1, m),
                 lower=-np.ones(n) if boxed else -inf, upper=np.ones(n) if boxed else inf)
        ref = scipy.optimize.linprog(c, A_ub=A, b_ub=p["b_ineq"], bounds=list(zip(p["lower"], p["upper"])))
        assert ref.status == (0 if boxed else 3)
        problems.append(p)
        expected.append(QPStatus.SOLVED if boxed else QPStatus.DUAL_INFEASIBLE)
    # x0 <= -1 and x0 >= 1 as rows; as bounds (lower > upper); disjoint halfspaces.
    rows = np.zeros((m, n))
    rows[0, 0], rows[1, 0], rows[2, 1], rows[3, 1] = 1.0, -1.0, 1.0, -1.0
    b_rows = np.r_[-1.0, -1.0, 2.0, 2.0, np.ones(m - 4)]
    problems.append(dict(Q=np.eye(n), c=np.zeros(n), A_ineq=rows, b_ineq=b_rows, lower=-inf, upper=inf))
    lower = np.r_[1.0, -inf[1:]]
    problems.append(dict(Q=np.eye(n), c=np.zeros(n), A_ineq=np.zeros((m, n)), b_ineq=np.ones(m),
                         lower=lower, upper=np.r_[-1.0, inf[1:]]))
    halfspaces = np.zeros((m, n))
    halfspaces[0], halfspaces[1] = np.ones(n), -np.ones(n)  # sum x <= -1 and sum x >= 1
    problems.append(dict(Q=np.eye(n), c=np.zeros(n), A_ineq=halfspaces, b_ineq=np.r_[-1.0, -1.0, np.ones(m - 2)],
                         lower=-inf, upper=inf))
    expected += [QPStatus.PRIMAL_INFEASIBLE] * 3

    for p in problems:
        p.update(A_eq=np.zeros((0, n)), b_eq=np.zeros(0))
    sols = jax.jit(jax.vmap(qp.solve))(*stack(problems))
    np.testing.assert_array_equal(np.asarray(sols.status), np.asarray(expected, np.int32))
    for i, (p, status) in enumerate(zip(problems, expected)):
        sol = member(sols, i)
        if status == QPStatus.PRIMAL_INFEASIBLE:  # a Farkas certificate, unit infinity norm
            y, zl, zu = (np.asarray(v) for v in (sol.y_ineq, sol.z_lower, sol.z_upper))
            fl, fu = np.isfinite(p["lower"]), np.isfinite(p["upper"])
            assert min(y.min(), zl.min(), zu.min()) >= 0
            hz = p["b_ineq"] @ y - p["lower"][fl] @ zl[fl] + p["upper"][fu] @ zu[fu]
            assert hz < -1e-6 and np.abs(p["A_ineq"].T @ y - zl + zu).max() <= 1e-7 * -hz
        elif status == QPStatus.DUAL_INFEASIBLE:  # a direction of unbounded descent
            d = np.asarray(sol.x)
            assert p["c"] @ d < -1e-6 and (p["A_ineq"] @ d).max() <= 1e-8 * -(p["c"] @ d)
        else:
            e = kkt_errors(p, sol)
            assert e["violation"] < 1e-9 and e["stationarity"] < 1e-8, e
    assert int(np.max(sols.iterations)) <= 25


def test_nonfinite_data_is_a_status():
    p = random_qp(np.random.default_rng(5), *STANDARD)
    p["c"] = p["c"].copy()
    p["c"][3] = np.nan
    assert int(qp.solve(*args(p)).status) == QPStatus.NONFINITE


# -------------------------------------------------------------- transformations


def test_vmap_matches_single_solves_under_jit(batch):
    problems, sols = batch
    assert sols.x.shape == (32, STANDARD[0]) and sols.status.shape == (32,)
    for i, p in enumerate(problems):
        single = qp.solve(*args(p))
        batched = member(sols, i)
        assert int(batched.status) == int(single.status) == QPStatus.SOLVED
        for field in ("x", "y_eq", "y_ineq", "z_lower", "z_upper", "objective"):
            np.testing.assert_allclose(getattr(batched, field), getattr(single, field), rtol=1e-7, atol=1e-8)


def test_float32_keeps_dtype_and_accuracy():
    rng = np.random.default_rng(7)
    for _ in range(3):
        p = random_qp(rng, *STANDARD)
        ref = qp.solve(*args(p))
        sol = qp.solve(*(np.asarray(a, np.float32) for a in args(p)))
        assert int(sol.status) == QPStatus.SOLVED
        for field in ("x", "y_eq", "y_ineq", "z_lower", "z_upper", "objective", "primal_residual"):
            assert getattr(sol, field).dtype == jnp.float32, field
        assert sol.status.dtype == jnp.int32
        np.testing.assert_allclose(sol.x, ref.x, atol=1e-4 * max(1.0, np.abs(ref.x).max()))
        np.testing.assert_allclose(sol.objective, ref.objective, rtol=1e-4)


def test_warm_start_from_perturbed_problem():
    rng = np.random.default_rng(8)
    saved = 0
    for _ in range(5):
        p = random_qp(rng, *STANDARD)
        previous = qp.solve(*args(p))
        q = dict(p, c=p["c"] + 1e-3 * rng.standard_normal(STANDARD[0]),
                 b_ineq=p["b_ineq"] + 1e-3 * rng.uniform(size=STANDARD[2]))
        cold = qp.solve(*args(q))
        warm = qp.solve(*args(q), warm_start=previous)
        assert int(warm.status) == int(cold.status) == QPStatus.SOLVED
        assert int(warm.iterations) <= int(cold.iterations)
        saved += int(cold.iterations) - int(warm.iterations)
        np.testing.assert_allclose(warm.x, cold.x, atol=1e-7)
        assert_solved_exactly(q, warm)
    assert saved >= 5  # warm starts do save iterations on small perturbations
    # A useless warm start (NaN, or another problem's answer) must not break the solve.
    junk = jax.tree_util.tree_map(lambda v: jnp.full_like(v, jnp.nan) if v.dtype.kind == "f" else v, previous)
    assert int(qp.solve(*args(q), warm_start=junk).status) == QPStatus.SOLVED


# ------------------------------------------------------------------------ validation


def test_max_iter_status():
    Q, c, lower = np.diag([2.0, 4.0, 1.0]), np.ones(3), np.zeros(3)
    sol = qp.solve(Q, c, lower=lower, max_iter=1)
    assert int(sol.status) == QPStatus.MAX_ITER and int(sol.iterations) == 1
    sol = qp.solve(Q, c, lower=lower, max_iter=jnp.int32(30))
    assert int(sol.status) == QPStatus.SOLVED and 1 < int(sol.iterations) <= 30
    with pytest.raises(ValueError, match="max_iter"):
        qp.solve(Q, c, max_iter=-1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(Q=np.eye(3), c=np.ones(2)), "Q"),
        (dict(Q=np.eye(2), c=np.ones((2, 1))), "c"),
        (dict(Q=np.eye(2), c=np.ones(2), A_eq=np.ones((1, 3)), b_eq=np.ones(1)), "A_eq"),
        (dict(Q=np.eye(2), c=np.ones(2), A_eq=np.ones((1, 2)), b_eq=np.ones(2)), "b_eq"),
        (dict(Q=np.eye(2), c=np.ones(2), A_ineq=np.ones((1, 2))), "b_ineq"),
        (dict(Q=np.eye(2), c=np.ones(2), A_ineq=np.ones(2), b_ineq=np.ones(1)), "A_ineq"),
        (dict(Q=np.eye(2), c=np.ones(2), lower=np.zeros(3)), "lower"),
        (dict(Q=np.eye(2), c=np.ones(2), upper=np.zeros((2, 1))), "upper"),
    ],
)
def test_shape_errors_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        qp.solve(**kwargs)


def test_warm_start_shape_error():
    sol = qp.solve(np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="warm_start.x"):
        qp.solve(np.eye(2), np.ones(2), warm_start=sol)
    assert isinstance(sol, QPSolution) and QPStatus(int(sol.status)) is QPStatus.SOLVED
