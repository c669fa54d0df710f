"""jc.ProjectedGradient: spectral projected gradient on sets given by a projection."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jconstrain as jc
from jconstrain._solvers.projected import ProjectedGradient

ROW = re.compile(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$")


def _status(sol):
    return jc.Status(int(sol.status))


def _stationarity(problem, x, project):
    """||x - P(x - ∇f)||_∞ / max(1, ||∇f||_∞), recomputed here."""
    g = jax.grad(problem.objective)(x, None)
    return float(jnp.max(jnp.abs(x - project(x - g))) / max(1.0, float(jnp.max(jnp.abs(g)))))


# ------------------------------------------------------------------ against SciPy


def _simplex_least_squares():
    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((30, 10)), rng.standard_normal(30)
    return A, b, jc.Problem(lambda x, a: 0.5 * jnp.sum((A @ x - b) ** 2))


@pytest.fixture(scope="module")
def simplex_solution():
    A, b, problem = _simplex_least_squares()
    return jc.solve(problem, jnp.full(10, 0.1), ProjectedGradient(projection=jc.projections.simplex()))


def test_simplex_least_squares_matches_slsqp(simplex_solution):
    A, b, problem = _simplex_least_squares()
    project = jc.projections.simplex()
    sol = simplex_solution
    ref = scipy.optimize.minimize(
        lambda x: 0.5 * np.sum((A @ x - b) ** 2),
        np.full(10, 0.1),
        jac=lambda x: A.T @ (A @ x - b),
        method="SLSQP",
        bounds=[(0, None)] * 10,
        constraints=[{"type": "eq", "fun": lambda x: np.sum(x) - 1, "jac": lambda x: np.ones(10)}],
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    assert _status(sol) == jc.Status.CONVERGED and bool(sol.success)
    np.testing.assert_allclose(sol.x, ref.x, atol=1e-6)
    np.testing.assert_allclose(sol.f, ref.fun, rtol=1e-10)
    assert float(sol.f) <= ref.fun + 1e-12
    # KKT on the simplex: ∇f_i = μ on the support, ∇f_i >= μ off it.
    x = np.asarray(sol.x)
    g = A.T @ (A @ x - b)
    support = x > 1e-10
    assert 0 < support.sum() < 10  # some entries at 0, some not: a real test
    mu = g[support].mean()
    np.testing.assert_allclose(g[support], mu, atol=1e-7)
    assert np.all(g[~support] >= mu - 1e-7)
    np.testing.assert_allclose(jnp.sum(sol.x), 1.0, atol=1e-12)
    assert float(jnp.min(sol.x)) >= 0.0
    assert float(sol.stats.violation) <= 1e-12
    # The stats describe sol.x.
    assert float(sol.stats.stationarity) <= 1e-8
    np.testing.assert_allclose(sol.stats.stationarity, _stationarity(problem, sol.x, project), rtol=1e-6, atol=1e-15)
    np.testing.assert_allclose(sol.f, problem.objective(sol.x, None), rtol=1e-14)
    # No eq/ineq constraints: no such multipliers; no bounds: zero bound multipliers.
    assert sol.multipliers.eq is None and sol.multipliers.ineq is None
    np.testing.assert_array_equal(sol.multipliers.lower, 0.0)
    np.testing.assert_array_equal(sol.multipliers.upper, 0.0)


def _rosenbrock(x, args):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


ROSEN_UPPER = np.array([2.0, 2.0, 2.0, 0.5, 2.0])


def test_rosenbrock_in_a_box_matches_lbfgsb():
    """Nonconvex, bounds only (projection=None: the box projection), one bound active."""
    problem = jc.Problem(_rosenbrock, bounds=(-1.5, jnp.asarray(ROSEN_UPPER)))
    sol = jc.solve(problem, jnp.zeros(5), ProjectedGradient())
    grad = jax.grad(lambda x: _rosenbrock(x, None))
    ref = scipy.optimize.minimize(
        lambda x: float(_rosenbrock(jnp.asarray(x), None)),
        np.zeros(5),
        jac=lambda x: np.asarray(grad(jnp.asarray(x))),
        method="L-BFGS-B",
        bounds=[(-1.5, u) for u in ROSEN_UPPER],
        options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 10000},
    )
    assert _status(sol) == jc.Status.CONVERGED
    np.testing.assert_allclose(sol.x, ref.x, atol=1e-6)
    np.testing.assert_allclose(sol.f, ref.fun, rtol=1e-9)
    assert float(sol.x[3]) == 0.5  # the active upper bound, exactly
    # Bound multipliers: -∂f/∂x_3 at the upper bound, zero elsewhere; ∇f + z_u - z_l ≈ 0.
    g = np.asarray(grad(sol.x))
    assert g[3] < -0.1
    np.testing.assert_allclose(sol.multipliers.upper, [0, 0, 0, -g[3], 0], atol=1e-12)
    np.testing.assert_array_equal(sol.multipliers.lower, 0.0)
    kkt = g + np.asarray(sol.multipliers.upper) - np.asarray(sol.multipliers.lower)
    np.testing.assert_allclose(kkt, 0.0, atol=1e-6)
    assert float(sol.stats.violation) == 0.0


# ----------------------------------------------------------------- analytic answers


def test_stiefel_trace_maximisation():
    """max tr(XᵀSX) over X (8 x 2) with XᵀX = I: f* = -(λ1 + λ2), a nonconvex set."""
    rng = np.random.default_rng(1)
    B = rng.standard_normal((8, 8))
    S = B @ B.T / 8
    problem = jc.Problem(lambda X, a: -jnp.trace(X.T @ S @ X))
    X0 = jnp.asarray(np.linalg.qr(rng.standard_normal((8, 2)))[0])
    sol = jc.solve(problem, X0, ProjectedGradient(projection=jc.projections.stiefel()))
    eigenvalues = np.linalg.eigvalsh(S)
    f_star = -(eigenvalues[-1] + eigenvalues[-2])
    assert _status(sol) == jc.Status.CONVERGED
    np.testing.assert_allclose(sol.f, f_star, rtol=1e-6)
    np.testing.assert_allclose(sol.x.T @ sol.x, np.eye(2), atol=1e-12)
    assert float(sol.stats.violation) <= 1e-12
    # The columns span the top-2 eigenspace.
    V = np.linalg.eigh(S)[1][:, -2:]
    np.testing.assert_allclose(V @ (V.T @ np.asarray(sol.x)), sol.x, atol=1e-5)


def _ball_quadratic(n=20, seed=2):
    """f = ½ xᵀHx - cᵀx on ||x|| <= 1; c built from a chosen x* and μ* (KKT, H ≻ 0)."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    H = Q @ np.diag(np.logspace(0, 2, n)) @ Q.T
    problem = jc.Problem(lambda x, c: 0.5 * x @ H @ x - c @ x)
    return H, problem


def _ball_data(H, directions, radii, mus):
    """Members with ||x*|| = radius; μ* > 0 only on the boundary (radius 1)."""
    x_star = directions / np.linalg.norm(directions, axis=1, keepdims=True) * radii[:, None]
    c = x_star @ H + mus[:, None] * x_star  # H x* + μ x* = c
    return x_star, c


def test_l2_ball_quadratic_analytic():
    H, problem = _ball_quadratic()
    rng = np.random.default_rng(3)
    x_star, c = _ball_data(H, rng.standard_normal((1, 20)), np.array([1.0]), np.array([5.0]))
    sol = jc.solve(problem, jnp.zeros(20), ProjectedGradient(projection=jc.projections.l2_ball(1.0)), jnp.asarray(c[0]))
    assert _status(sol) == jc.Status.CONVERGED
    np.testing.assert_allclose(sol.x, x_star[0], atol=1e-8)
    np.testing.assert_allclose(jnp.linalg.norm(sol.x), 1.0, atol=1e-12)


def test_pytree_variables_with_a_pytree_projection():
    """x = {"p": simplex row, "w": l2 ball}; the projection maps the dict."""
    a = jnp.array([0.9, 0.4, -0.3])
    d = jnp.array([3.0, 4.0])

    def project(x):
        return {"p": jc.projections.simplex()(x["p"]), "w": jc.projections.l2_ball(1.0)(x["w"])}

    def f(x, args):
        return jnp.sum((x["p"] - a) ** 2) + jnp.sum((x["w"] - d) ** 2) + x["w"][0] * x["p"][0]

    problem = jc.Problem(f)
    x0 = {"p": jnp.full(3, 1 / 3), "w": jnp.zeros(2)}
    sol = jc.solve(problem, x0, ProjectedGradient(projection=project))
    assert _status(sol) == jc.Status.CONVERGED
    assert set(sol.x) == {"p", "w"}
    ref = scipy.optimize.minimize(
        lambda v: float(problem.objective({"p": jnp.asarray(v[:3]), "w": jnp.asarray(v[3:])}, None)),
        np.array([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0]),
        method="SLSQP",
        bounds=[(0, None)] * 3 + [(None, None)] * 2,
        constraints=[
            {"type": "eq", "fun": lambda v: np.sum(v[:3]) - 1},
            {"type": "ineq", "fun": lambda v: 1 - v[3:] @ v[3:]},
        ],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    np.testing.assert_allclose(jnp.concatenate([sol.x["p"], sol.x["w"]]), ref.x, atol=1e-6)


# ------------------------------------------------------------- errors and statuses


@pytest.mark.parametrize("kind", ["eq", "ineq"])
def test_eq_or_ineq_problem_raises_naming_the_solver(kind):
    problem = jc.Problem(lambda x, a: jnp.sum(x**2), **{kind: lambda x, a: x[0] - 1.0})
    with pytest.raises(ValueError, match=r"jc\.ProjectedGradient.*eq/ineq.*jc\.SQP"):
        jc.solve(problem, jnp.ones(2), ProjectedGradient())
    with pytest.raises(ValueError, match=r"jc\.ProjectedGradient"):  # at trace time, under jit
        jax.jit(lambda x0: jc.solve(problem, x0, ProjectedGradient()))(jnp.ones(2))


def test_projection_with_wrong_output_raises():
    problem = jc.Problem(lambda x, a: jnp.sum(x**2))
    with pytest.raises(ValueError, match="projection"):
        jc.solve(problem, jnp.ones(3), ProjectedGradient(projection=lambda x: x[:2]))
    with pytest.raises(TypeError, match="projection"):
        ProjectedGradient(projection="simplex")


def test_nonfinite_at_x0():
    problem = jc.Problem(lambda x, a: jnp.sum(jnp.sqrt(x - 2.0)))  # NaN on the whole box
    sol = jc.solve(problem, jnp.ones(2), ProjectedGradient(projection=jc.projections.box(0.0, 1.0)))
    assert _status(sol) == jc.Status.NONFINITE
    assert int(sol.stats.iterations) == 0


def test_nonfinite_trial_points_are_backtracked():
    """f = Σ 10x - log x; the first trial step lands at x < 0 (NaN): backtrack, converge."""
    problem = jc.Problem(lambda x, a: jnp.sum(10.0 * x - jnp.log(x)))
    sol = jc.solve(problem, jnp.full(3, 0.5), ProjectedGradient())
    assert _status(sol) == jc.Status.CONVERGED
    np.testing.assert_allclose(sol.x, 0.1, rtol=1e-8)
    assert int(sol.stats.evaluations) > int(sol.stats.iterations) + 1  # some trial was rejected


def test_unbounded():
    problem = jc.Problem(lambda x, a: -jnp.sum(x), bounds=(0.0, None))
    sol = jc.solve(problem, jnp.ones(3), ProjectedGradient())
    assert _status(sol) == jc.Status.UNBOUNDED
    assert float(sol.f) < -1e20


def test_stalled_when_no_descent_is_possible():
    """A gradient pointing uphill (wrong custom derivative): every trial fails."""

    @jax.custom_jvp
    def f(x):
        return jnp.sum(x**2)

    f.defjvp(lambda p, t: (f(p[0]), -2.0 * jnp.dot(p[0], t[0])))
    problem = jc.Problem(lambda x, a: f(x))
    sol = jc.solve(problem, jnp.ones(2), ProjectedGradient(max_backtracks=20))
    assert _status(sol) == jc.Status.STALLED
    np.testing.assert_array_equal(sol.x, jnp.ones(2))  # the last good point
    assert int(sol.stats.iterations) == 1


def test_max_steps_and_fields_describe_x():
    A, b, problem = _simplex_least_squares()
    project = jc.projections.simplex()
    sol = jc.solve(problem, jnp.full(10, 0.1), ProjectedGradient(projection=project), max_steps=3)
    assert _status(sol) == jc.Status.MAX_STEPS
    assert int(sol.stats.iterations) == 3
    np.testing.assert_allclose(sol.f, problem.objective(sol.x, None), rtol=1e-14)
    np.testing.assert_allclose(sol.stats.stationarity, _stationarity(problem, sol.x, project), rtol=1e-10)
    assert float(sol.stats.stationarity) > 1e-8


def test_x0_outside_the_set_is_projected_first():
    problem = jc.Problem(lambda x, a: jnp.sum(x**2))
    solver = ProjectedGradient(projection=jc.projections.simplex())
    sol = jc.solve(problem, jnp.array([3.0, -1.0, 0.0]), solver, max_steps=0)
    np.testing.assert_allclose(sol.x, [1.0, 0.0, 0.0])
    assert float(sol.stats.violation) <= 1e-15


# ------------------------------------------------------------------ jit, vmap, dtypes


def test_jit_and_vmap_over_args():
    """16 l2-ball quadratics, vmapped over c under jit: 12 on the boundary, 4 inside."""
    H, problem = _ball_quadratic()
    rng = np.random.default_rng(4)
    radii = np.array([1.0] * 12 + [0.3, 0.5, 0.7, 0.9])
    mus = np.where(radii == 1.0, rng.uniform(0.5, 20.0, 16), 0.0)
    x_star, c = _ball_data(H, rng.standard_normal((16, 20)), radii, mus)
    solver = ProjectedGradient(projection=jc.projections.l2_ball(1.0))
    run = jax.jit(jax.vmap(lambda c: jc.solve(problem, jnp.zeros(20), solver, c)))
    sols = run(jnp.asarray(c))
    assert sols.x.shape == (16, 20) and sols.status.shape == (16,)
    assert np.all(np.asarray(sols.success))
    np.testing.assert_allclose(sols.x, x_star, atol=1e-7)
    iterations = np.asarray(sols.stats.iterations)
    assert iterations.min() < iterations.max()  # members stop on their own
    one = jax.jit(lambda c: jc.solve(problem, jnp.zeros(20), solver, c))(jnp.asarray(c[0]))
    assert int(one.stats.iterations) == iterations[0]
    np.testing.assert_allclose(one.x, sols.x[0], rtol=1e-12, atol=1e-14)


def test_vmap_over_a_float_hyperparameter():
    A, b, problem = _simplex_least_squares()
    tols = jnp.array([1e-3, 1e-10])
    project = jc.projections.simplex()
    sols = jax.vmap(lambda t: jc.solve(problem, jnp.full(10, 0.1), ProjectedGradient(projection=project, opt_tol=t)))(tols)
    it = np.asarray(sols.stats.iterations)
    assert it[0] < it[1]
    assert np.all(np.asarray(sols.success))
    assert float(sols.stats.stationarity[0]) <= 1e-3 and float(sols.stats.stationarity[1]) <= 1e-10


def test_float32_keeps_float32(simplex_solution):
    A, b, problem = _simplex_least_squares()
    x0 = jnp.full(10, 0.1, jnp.float32)
    sol = jc.solve(problem, x0, ProjectedGradient(projection=jc.projections.simplex()))
    assert sol.x.dtype == jnp.float32 and sol.f.dtype == jnp.float32
    assert sol.stats.stationarity.dtype == jnp.float32
    assert _status(sol) == jc.Status.CONVERGED
    np.testing.assert_allclose(sol.x, simplex_solution.x, atol=1e-4)


# ------------------------------------------------------------- printer, warm start


def test_verbose_under_jit_prints_a_table(capsys):
    A, b, problem = _simplex_least_squares()
    solver = ProjectedGradient(projection=jc.projections.simplex())
    sol = jax.jit(lambda x0: jc.solve(problem, x0, solver, verbose=True))(jnp.full(10, 0.1))
    jax.block_until_ready(sol)
    jax.effects_barrier()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "jconstrain ProjectedGradient"
    assert lines[1].split() == ["iter", "f", "violation", "stationarity", "step", "bb_step"]
    rows = [ROW.match(line) for line in lines[2:-1]]
    assert all(rows), lines
    k = int(sol.stats.iterations)
    assert [int(r.group(1)) for r in rows] == list(range(k + 1))
    np.testing.assert_allclose(float(rows[-1].group(2)), float(sol.f), rtol=1e-6)
    assert lines[-1].startswith("CONVERGED:") and f"{k} iterations" in lines[-1]


def test_warm_start(simplex_solution):
    A, b, problem = _simplex_least_squares()
    solver = ProjectedGradient(projection=jc.projections.simplex())
    first = jc.solve(problem, jnp.full(10, 0.1), solver, max_steps=5)
    assert _status(first) == jc.Status.MAX_STEPS
    # The spectral step is carried over (max_steps=0 shows the initial state).
    again = jc.solve(problem, first.x, solver, max_steps=0, warm_start=first)
    assert float(again.state.lam) == float(first.state.lam)
    rest = jc.solve(problem, first.x, solver, warm_start=first.state)
    full = simplex_solution
    assert _status(rest) == jc.Status.CONVERGED
    np.testing.assert_allclose(rest.x, full.x, atol=1e-8)
    # From a converged solution: nothing left to do.
    done = jc.solve(problem, full.x, solver, warm_start=full)
    assert _status(done) == jc.Status.CONVERGED and int(done.stats.iterations) == 0
    np.testing.assert_array_equal(done.x, full.x)
