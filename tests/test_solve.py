"""The public contract of `jc.solve` (DESIGN.md), checked with `jc.Penalty`.

Pytrees in and out (dicts, equinox Modules with non-array leaves, constraint pytrees),
bounds in every form, statuses as data, sign conventions (KKT at the solution), and
composition with `jax.jit` and `jax.vmap`.
"""

import functools

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc
from problems import (
    DICT_PROBLEM,
    HS28,
    HS35,
    KnownProblem,
    check_solution,
    disc_projection_problem,
    disc_projection_solution,
    kkt_residual,
    violation,
)

SOLVER = jc.Penalty()


@pytest.fixture(scope="module")
def dict_solution():
    return jc.solve(DICT_PROBLEM.problem, DICT_PROBLEM.x0, SOLVER)


# ------------------------------------------------------------------ pytrees in and out


def test_dict_x0_with_pytree_constraints(dict_solution):
    sol = dict_solution
    check_solution(DICT_PROBLEM, sol)
    # x has x0's structure, shapes and dtypes, and the known answer.
    chex.assert_trees_all_equal_shapes_and_dtypes(sol.x, DICT_PROBLEM.x0)
    chex.assert_trees_all_close(sol.x, DICT_PROBLEM.x_star, atol=1e-5)
    # Multipliers are shaped like the constraint outputs ...
    m = sol.multipliers
    assert set(m.eq) == {"sum"} and m.eq["sum"].shape == ()
    assert isinstance(m.ineq, tuple) and len(m.ineq) == 2
    assert m.ineq[0].shape == (2, 2) and m.ineq[1].shape == (1,)
    # ... and have the analytic values (see problems.py): λ = 0.4, ν_B = 1.5, ν_a0 = 0.4.
    np.testing.assert_allclose(m.eq["sum"], 0.4, rtol=1e-4)
    np.testing.assert_allclose(m.ineq[0], np.full((2, 2), 1.5), rtol=1e-4)
    np.testing.assert_allclose(m.ineq[1], [0.4], rtol=1e-4)
    # The bound multipliers are shaped like x (no bounds: zero).
    zeros = jax.tree_util.tree_map(jnp.zeros_like, DICT_PROBLEM.x0)
    for side in (m.lower, m.upper):
        chex.assert_trees_all_equal_shapes_and_dtypes(side, DICT_PROBLEM.x0)
        chex.assert_trees_all_equal(side, zeros)


def test_status_and_success(dict_solution):
    sol = dict_solution
    assert sol.status.dtype == jnp.int32 and sol.status.shape == ()
    assert jc.Status(int(sol.status)) is jc.Status.CONVERGED
    assert isinstance(sol.success, jax.Array) and sol.success.dtype == jnp.bool_
    assert bool(sol.success)
    assert jc.Status.CONVERGED.description.startswith("converged")
    for name in ("CONVERGED", "MAX_STEPS", "STALLED", "INFEASIBLE", "UNBOUNDED", "NONFINITE"):
        assert hasattr(jc.Status, name)
    assert len({int(s) for s in jc.Status}) == len(jc.Status)


def test_stats_describe_x(dict_solution):
    sol = dict_solution
    st = sol.stats
    assert int(st.iterations) >= 1
    assert int(st.inner_iterations) >= int(st.iterations)
    assert int(st.evaluations) > int(st.inner_iterations)
    np.testing.assert_allclose(st.violation, violation(DICT_PROBLEM.problem, sol.x), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(sol.f, DICT_PROBLEM.problem.objective(sol.x, None), rtol=1e-14)
    assert 0 <= float(st.stationarity) <= SOLVER.opt_tol


class Affine(eqx.Module):
    """A Module with array variables and non-array leaves (a function, an int)."""

    w: jax.Array
    b: jax.Array
    act: callable = jax.nn.relu
    n: int = 2


C = jnp.array([1.0, 2.0, 3.0])
# min ||w - c||² + (b - 1)²  s.t.  relu(w0) <= 0.5:  w* = (0.5, 2, 3), b* = 1, f* = 0.25, ν = 1.
AFFINE = KnownProblem(
    name="affine-module",
    problem=jc.Problem(
        objective=lambda m, a: jnp.sum((m.w - C) ** 2) + (m.b - 1.0) ** 2,
        ineq=lambda m, a: m.act(m.w[0]) - 0.5,
    ),
    x0=Affine(jnp.zeros(3), jnp.zeros(())),
    f_star=0.25,
    has_ineq=True,
)


def test_module_x0_with_non_array_leaves():
    sol = jc.solve(AFFINE.problem, AFFINE.x0, SOLVER)
    check_solution(AFFINE, sol)
    assert type(sol.x) is Affine
    assert sol.x.act is jax.nn.relu
    assert sol.x.n == 2 and type(sol.x.n) is int
    np.testing.assert_allclose(sol.x.w, [0.5, 2.0, 3.0], atol=1e-5)
    np.testing.assert_allclose(sol.x.b, 1.0, atol=1e-6)
    np.testing.assert_allclose(sol.multipliers.ineq, 1.0, rtol=1e-4)
    assert type(sol.multipliers.lower) is Affine and sol.multipliers.lower.act is jax.nn.relu


def test_mlp_x0():
    """An eqx.nn.MLP (activation functions as leaves) fitted under a norm constraint."""
    mlp = eqx.nn.MLP(1, 1, 4, 1, activation=jax.nn.tanh, key=jax.random.PRNGKey(0))
    xs = jnp.linspace(-1.0, 1.0, 6)[:, None]
    ys = jnp.sin(3.0 * xs)
    loss = lambda m, a: jnp.mean((jax.vmap(m)(xs) - ys) ** 2)
    # ||last layer weight||² <= 0.3 (active: the fit wants larger weights).
    norm = lambda m, a: jnp.sum(m.layers[-1].weight ** 2) - 0.3
    problem = jc.Problem(objective=loss, ineq=norm)
    sol = eqx.filter_jit(jc.solve)(problem, mlp, SOLVER)
    assert type(sol.x) is eqx.nn.MLP
    assert sol.x.activation is jax.nn.tanh
    assert sol.x.final_activation is mlp.final_activation
    assert [l.weight.shape for l in sol.x.layers] == [l.weight.shape for l in mlp.layers]
    assert jax.tree_util.tree_structure(sol.x) == jax.tree_util.tree_structure(mlp)
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    np.testing.assert_allclose(sol.f, loss(sol.x, None), rtol=1e-12)
    assert float(sol.f) < 0.5 * float(loss(mlp, None))
    assert violation(problem, sol.x) <= 1e-6
    assert float(sol.multipliers.ineq) > 0  # the constraint is active
    r = kkt_residual(problem, sol)
    assert np.max(np.abs(r)) <= 1e-5


# The same box problem, bounds stated in every form: min ||x - p||², x in [l, u];
# x* = clip(p, l, u), z_lower = 2 max(l - p, 0), z_upper = 2 max(p - u, 0).
P = {"a": jnp.array([-1.0, 0.5, 2.0]), "B": jnp.array([[3.0, -3.0], [0.2, 0.7]])}
X0_BOX = {"a": jnp.zeros(3), "B": jnp.zeros((2, 2))}
BOX_OBJECTIVE = lambda x, a: jnp.sum((x["a"] - P["a"]) ** 2) + jnp.sum((x["B"] - P["B"]) ** 2)


@pytest.mark.parametrize(
    "bounds",
    [
        (0.0, 1.0),
        (None, 1.0),
        (-jnp.inf, jnp.inf),
        ({"a": 0.0, "B": -jnp.inf}, {"a": jnp.array([jnp.inf, jnp.inf, 1.5]), "B": jnp.full((2, 2), 2.0)}),
    ],
    ids=["scalars", "upper-only", "infinite", "pytrees"],
)
def test_bounds_forms(bounds):
    problem = jc.Problem(objective=BOX_OBJECTIVE, bounds=bounds)
    sol = jc.solve(problem, X0_BOX, SOLVER)
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    lower, upper = bounds
    for k in P:
        side = lambda s, fill: np.broadcast_to(
            np.asarray(fill if s is None else (s[k] if isinstance(s, dict) else s), float), P[k].shape
        )
        lo, up = side(lower, -np.inf), side(upper, np.inf)
        p = np.asarray(P[k])
        np.testing.assert_allclose(sol.x[k], np.clip(p, lo, up), atol=1e-6)
        np.testing.assert_allclose(sol.multipliers.lower[k], 2 * np.maximum(lo - p, 0), atol=1e-5)
        np.testing.assert_allclose(sol.multipliers.upper[k], 2 * np.maximum(p - up, 0), atol=1e-5)
    assert violation(problem, sol.x) <= 1e-6
    np.testing.assert_allclose(sol.stats.violation, violation(problem, sol.x), atol=1e-15)
    assert np.max(np.abs(kkt_residual(problem, sol))) <= 1e-5


def test_bounds_on_a_module_x0():
    lower = Affine(jnp.full(3, 1.2), jnp.asarray(-jnp.inf))  # shaped like x, non-array leaves ignored
    problem = jc.Problem(objective=AFFINE.problem.objective, bounds=(lower, None))
    sol = jc.solve(problem, Affine(jnp.full(3, 1.5), jnp.zeros(())), SOLVER)
    assert sol.success
    np.testing.assert_allclose(sol.x.w, [1.2, 2.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(sol.multipliers.lower.w, [0.4, 0.0, 0.0], atol=1e-5)
    assert sol.x.act is jax.nn.relu


def test_python_float_x0():
    sol = jc.solve(jc.Problem(lambda x, a: (x - 2.0) ** 2, ineq=lambda x, a: x - 1.0), 0.0, SOLVER)
    assert sol.success
    np.testing.assert_allclose(sol.x, 1.0, atol=1e-6)
    np.testing.assert_allclose(sol.multipliers.ineq, 2.0, rtol=1e-4)


def test_args_with_non_array_leaves():
    """args may hold functions, Python floats and strings; they reach f, eq and ineq."""
    problem = jc.Problem(
        objective=lambda x, a: jnp.sum((a["f"](x) - a["t"]) ** 2),
        ineq=lambda x, a: x[0] - a["cap"],
    )
    args = {"f": lambda x: 2.0 * x, "t": jnp.array([4.0, 2.0]), "cap": 1.5, "label": "demo"}
    sol = jc.solve(problem, jnp.zeros(2), SOLVER, args)
    assert sol.success
    np.testing.assert_allclose(sol.x, [1.5, 1.0], atol=1e-6)  # x0 capped at 1.5
    np.testing.assert_allclose(sol.multipliers.ineq, 4.0, rtol=1e-4)  # 4 (2 x0 - 4) + ν = 0


def test_status_nonfinite_objective_at_x0():
    """Statuses are data, not exceptions: f = NaN at x0 gives NONFINITE."""
    sol = jc.solve(jc.Problem(lambda x, a: jnp.sum(jnp.sqrt(x - 2.0))), jnp.zeros(2), SOLVER)
    assert jc.Status(int(sol.status)) == jc.Status.NONFINITE
    assert not bool(sol.success)


# ------------------------------------------------------------------ jit


@functools.cache
def _eager_hs35():
    return jc.solve(HS35.problem, HS35.x0, SOLVER)


class TestJitAndEager(chex.TestCase):
    """The same test run jitted and eager (`chex.variants`): each solves HS35, and the
    whole Solution (x, f, status, multipliers, stats, solver state) matches the eager one."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_hs35(self):
        sol = self.variant(lambda x0: jc.solve(HS35.problem, x0, SOLVER))(HS35.x0)
        check_solution(HS35, sol)
        chex.assert_trees_all_close(sol, _eager_hs35(), rtol=1e-9, atol=1e-12)


def test_jit_of_solve_traces_once_across_args_and_hyperparameters():
    """Changing args or a float hyperparameter of the solver reuses the compiled solve:
    both are data (dynamic pytree leaves), not part of the trace."""
    problem = disc_projection_problem()
    chex.clear_trace_counter()
    run = jax.jit(chex.assert_max_traces(lambda solver, c: jc.solve(problem, jnp.zeros(2), solver, c), n=1))
    for opt_tol, c in ((1e-6, [2.0, 0.0]), (1e-8, [0.0, 3.0]), (1e-7, [0.3, 0.4])):
        sol = run(jc.Penalty(opt_tol=opt_tol), jnp.array(c))
        assert sol.success
        c = np.asarray(c)
        np.testing.assert_allclose(sol.x, c / max(1.0, np.linalg.norm(c)), atol=1e-5)


def test_filter_jit_of_solve_itself():
    sol = eqx.filter_jit(jc.solve)(HS28.problem, HS28.x0, SOLVER)
    check_solution(HS28, sol)


def test_jit_with_nan_x0_returns_nonfinite():
    x0 = jnp.array([jnp.nan, 1.0, 1.0])
    sol = jax.jit(lambda x0: jc.solve(HS28.problem, x0, SOLVER))(x0)
    assert jc.Status(int(sol.status)) == jc.Status.NONFINITE
    assert int(sol.stats.iterations) == 0


def test_jit_with_traced_empty_box_returns_infeasible():
    def run(lower, upper):
        problem = jc.Problem(objective=lambda x, a: jnp.sum(x**2), bounds=(lower, upper))
        return jc.solve(problem, jnp.zeros(2), SOLVER)

    sol = jax.jit(run)(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.5]))
    assert jc.Status(int(sol.status)) == jc.Status.INFEASIBLE
    assert int(sol.stats.iterations) == 0
    # The same compiled function with a non-empty box converges to its solution.
    sol = jax.jit(run)(jnp.array([0.5, -1.0]), jnp.array([1.0, 1.0]))
    assert sol.success
    np.testing.assert_allclose(sol.x, [0.5, 0.0], atol=1e-6)


# ------------------------------------------------------------------ vmap


@pytest.fixture(scope="module")
def disc_batch():
    """64 projections onto the unit disc, vmapped over args (some points inside)."""
    centres = 1.6 * jax.random.normal(jax.random.PRNGKey(42), (64, 2))
    problem = disc_projection_problem()
    sols = jax.jit(jax.vmap(lambda c: jc.solve(problem, jnp.zeros(2), SOLVER, c)))(centres)
    return problem, centres, sols


def test_vmap_over_args_64_answers(disc_batch):
    _, centres, sols = disc_batch
    x_star, f_star = disc_projection_solution(centres)
    assert sols.x.shape == (64, 2) and sols.status.shape == (64,)
    assert np.all(np.asarray(sols.success))
    np.testing.assert_allclose(sols.x, x_star, atol=1e-5)
    np.testing.assert_array_less(np.abs(np.asarray(sols.f) - f_star), 1e-5 * np.maximum(1.0, f_star))
    # ν = ||c|| - 1 outside the disc (x - c + ν x = 0 with x = c/||c||), 0 inside.
    nu_star = np.maximum(np.linalg.norm(centres, axis=1) - 1.0, 0.0)
    np.testing.assert_allclose(sols.multipliers.ineq, nu_star, atol=1e-4)
    inside = np.linalg.norm(centres, axis=1) < 1.0
    assert 0 < inside.sum() < 64  # the batch mixes inactive and active constraints


def test_vmap_members_match_single_solves(disc_batch):
    """A member that finishes early keeps its result while the others go on."""
    problem, centres, sols = disc_batch
    iterations = np.asarray(sols.stats.iterations)
    early, late = int(np.argmin(iterations)), int(np.argmax(iterations))
    assert iterations[early] < iterations[late]
    single = jax.jit(lambda c: jc.solve(problem, jnp.zeros(2), SOLVER, c))
    for i in (early, late):
        one = single(centres[i])
        assert int(one.stats.iterations) == iterations[i]
        assert int(one.stats.inner_iterations) == int(sols.stats.inner_iterations[i])
        assert int(one.status) == int(sols.status[i])
        np.testing.assert_allclose(sols.x[i], one.x, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(sols.f[i], one.f, rtol=1e-10, atol=1e-14)


def test_vmap_over_x0_each_member_its_own_status():
    tp = HS28
    x0 = jnp.stack([tp.x_star, tp.x0, jnp.array([jnp.nan, 0.0, 0.0])])
    sols = jax.vmap(lambda x0: jc.solve(tp.problem, x0, SOLVER))(x0)
    statuses = [jc.Status(int(s)) for s in sols.status]
    assert statuses == [jc.Status.CONVERGED, jc.Status.CONVERGED, jc.Status.NONFINITE]
    np.testing.assert_array_equal(np.asarray(sols.success), [True, True, False])
    iterations = np.asarray(sols.stats.iterations)
    assert iterations[0] == 0 and iterations[1] > 0 and iterations[2] == 0
    # Finished at once, the first member keeps its starting point exactly.
    np.testing.assert_array_equal(sols.x[0], tp.x_star)
    np.testing.assert_allclose(sols.x[1], tp.x_star, atol=1e-5)
