"""Batched solves: `jax.vmap(jc.solve)` over x0, args and float hyperparameters, every solver.

Under vmap the driving `lax.while_loop` runs until the last member is done; a member
that finished earlier must keep its own result (the loop selects per member). Each test
therefore builds a batch whose members need very different iteration counts (different
start points, conditioning and tolerances, plus a non-finite start that ends at once)
and checks every member against the same solve run alone: x within 1e-8, the same
status and the same iteration count.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc

NAN = float("nan")


def rosenbrock_in_a_disc() -> jc.Problem:
    """min (1 - x1)² + b (x2 - x1²)² + (x3 - x1)²  s.t.  x1 + x2 + x3 = e,  x1² + x2² <= r.

    args = (b, e, r): b sets the curvature of the valley (how hard), e and r move the
    constraints; with r < 0 the disc is empty (an infeasible member).
    """
    return jc.Problem(
        objective=lambda x, a: (1.0 - x[0]) ** 2 + a[0] * (x[1] - x[0] ** 2) ** 2 + (x[2] - x[0]) ** 2,
        eq=lambda x, a: jnp.sum(x) - a[1],
        ineq=lambda x, a: x[0] ** 2 + x[1] ** 2 - a[2],
    )


# Members: (x0, args, tolerance). The last starts at NaN: NONFINITE at iteration 0.
CONSTRAINED_MEMBERS = [
    ([0.5, 0.2, 0.3], [1.0, 1.0, 2.0], 1e-2),
    ([-1.2, 1.0, 0.0], [100.0, 2.0, 1.5], 1e-8),
    ([-2.0, 3.0, -1.0], [1000.0, 1.5, 0.9], 1e-9),
    ([2.0, -2.0, 2.0], [10.0, 0.0, 0.5], 1e-6),
    ([0.0, 0.0, 0.0], [5.0, 1.0, -1.0], 1e-6),  # empty disc: infeasible
    ([NAN, 0.0, 0.0], [1.0, 1.0, 2.0], 1e-6),  # non-finite start
]


def ill_conditioned_box_quadratic() -> jc.Problem:
    """min ½ Σ κ^(i/(n-1)) (x_i - c_i)²  over the box [-1, 1]^n; args = (κ, c)."""
    n = 8

    def objective(x, a):
        kappa, c = a
        weights = kappa ** (jnp.arange(n) / (n - 1))
        return 0.5 * jnp.sum(weights * (x - c) ** 2)

    return jc.Problem(objective=objective)


def _stack(members):
    """Columns of the member table as float64 arrays with a leading batch axis."""
    return tuple(jnp.asarray(np.array(column, dtype=float)) for column in zip(*members))


def assert_members_equal_single_solves(batched: jc.Solution, singles: list[jc.Solution]) -> None:
    """Each member of the vmapped batch equals its own solve: x (to 1e-8), status and the
    number of outer iterations.

    Not bit for bit: XLA compiles batched arithmetic differently (e.g. the summation
    order of a batched matvec), so a line-search trial at the margin of its Wolfe test
    may go either way and `stats.evaluations` can differ by one. The members here are
    solves that such rounding does not steer elsewhere; some are (e.g. jc.SQP from some
    HS71 starts: 233 iterations alone, 166 under vmap, 10 after a one-ulp nudge of x0),
    and for those only the tolerances of the solve itself can be expected to agree.
    """
    for i, single in enumerate(singles):
        member = jax.tree_util.tree_map(lambda leaf: leaf[i], batched)
        x_b, x_s = np.asarray(member.x), np.asarray(single.x)
        both_nan = np.isnan(x_b) & np.isnan(x_s)
        assert np.all(both_nan | (np.abs(x_b - x_s) <= 1e-8)), (i, x_b, x_s)
        assert int(member.status) == int(single.status), (i, member.status, single.status)
        got, want = int(member.stats.iterations), int(single.stats.iterations)
        assert got == want, (i, got, want)


def assert_iterations_differ_widely(batched: jc.Solution) -> None:
    """The batch only tests per-member stopping if its members stop far apart: the NaN
    start at iteration 0, the others at least 5 outer iterations apart."""
    iterations = np.asarray(batched.stats.iterations)
    started = iterations[iterations > 0]
    assert np.any(iterations == 0), iterations
    assert started.max() - started.min() >= 5, iterations


SOLVERS = {
    "SQP": lambda tol: jc.SQP(opt_tol=tol),
    "AugmentedLagrangian": lambda tol: jc.AugmentedLagrangian(opt_tol=tol),
    "AugmentedLagrangian+newton": lambda tol: jc.AugmentedLagrangian(opt_tol=tol, optimizer=jc.newton()),
    # The penalty method's outer count is set by the violation target (violation ~ 1/ρ).
    "Penalty": lambda tol: jc.Penalty(viol_tol=tol),
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_vmap_over_x0_args_and_tolerance_equals_single_solves(name):
    """One compiled batch over (x0, args, a tolerance): each member equals its own solve."""
    problem = rosenbrock_in_a_disc()
    make = SOLVERS[name]
    solve_one = lambda x0, a, tol: jc.solve(problem, x0, make(tol), a)
    X0, A, tols = _stack(CONSTRAINED_MEMBERS)
    batched = jax.jit(jax.vmap(solve_one))(X0, A, tols)
    single = jax.jit(solve_one)
    singles = [single(X0[i], A[i], tols[i]) for i in range(len(CONSTRAINED_MEMBERS))]
    assert_iterations_differ_widely(batched)
    assert_members_equal_single_solves(batched, singles)
    statuses = {jc.Status(int(s)) for s in np.asarray(batched.status)}
    assert jc.Status.CONVERGED in statuses and jc.Status.NONFINITE in statuses, statuses


def test_projected_gradient_vmap_over_x0_args_and_tolerance_equals_single_solves():
    """ProjectedGradient on box quadratics of condition 1 to 1e4, opt_tol swept too."""
    problem = ill_conditioned_box_quadratic()
    box = jc.projections.box(-1.0, 1.0)
    rng = np.random.default_rng(0)
    kappas = np.array([1.0, 10.0, 1e2, 1e3, 1e4, 1.0])
    centres = rng.uniform(-2.0, 2.0, (6, 8))
    X0 = rng.uniform(-1.0, 1.0, (6, 8))
    X0[-1, 0] = np.nan
    tols = np.array([1e-4, 1e-6, 1e-8, 1e-8, 1e-10, 1e-8])

    def solve_one(x0, kappa, c, tol):
        return jc.solve(problem, x0, jc.ProjectedGradient(projection=box, opt_tol=tol), (kappa, c))

    batched = jax.jit(jax.vmap(solve_one))(X0, kappas, centres, tols)
    single = jax.jit(solve_one)
    singles = [single(X0[i], kappas[i], centres[i], tols[i]) for i in range(6)]
    assert_iterations_differ_widely(batched)
    assert_members_equal_single_solves(batched, singles)
    ok = np.asarray(batched.success)
    assert ok[:-1].all() and not ok[-1], np.asarray(batched.status)
    np.testing.assert_allclose(np.asarray(batched.x)[:-1], np.clip(centres[:-1], -1.0, 1.0), atol=1e-6)


def test_vmap_of_solve_itself_with_in_axes():
    """The literal `jax.vmap(jc.solve, in_axes=(None, 0, None, 0))`: problem and solver shared."""
    problem = rosenbrock_in_a_disc()
    X0, A, _ = _stack(CONSTRAINED_MEMBERS[:4])
    solver = jc.AugmentedLagrangian()
    batched = jax.jit(jax.vmap(jc.solve, in_axes=(None, 0, None, 0)), static_argnums=(0, 2))(problem, X0, solver, A)
    single = jax.jit(lambda x0, a: jc.solve(problem, x0, solver, a))
    assert_members_equal_single_solves(batched, [single(X0[i], A[i]) for i in range(4)])


def test_filter_vmap_over_a_batch_of_solvers():
    """A stacked solver Module (array fields) sweeps several hyperparameters at once."""
    problem = rosenbrock_in_a_disc()
    x0, args = jnp.array([-1.2, 1.0, 0.0]), jnp.array([100.0, 2.0, 1.5])
    rho0 = jnp.array([1.0, 10.0, 100.0, 1e4])
    growth = jnp.array([2.0, 10.0, 5.0, 100.0])
    solvers = eqx.filter_vmap(lambda r, g: jc.Penalty(rho0=r, rho_growth=g))(rho0, growth)
    batched = eqx.filter_jit(eqx.filter_vmap(lambda s: jc.solve(problem, x0, s, args)))(solvers)
    single = jax.jit(lambda r, g: jc.solve(problem, x0, jc.Penalty(rho0=r, rho_growth=g), args))
    singles = [single(rho0[i], growth[i]) for i in range(4)]
    assert_members_equal_single_solves(batched, singles)
    assert len(set(np.asarray(batched.stats.iterations).tolist())) > 1  # the sweep mattered
