"""Derivatives of solutions (`jconstrain._implicit`): `jax.grad`/`jax.jacobian` of sol.x,
sol.f and sol.multipliers with respect to args, by implicit differentiation of the KKT
(or, for ProjectedGradient, fixed-point) conditions at the solution.

References are central finite differences of re-solves at args ± h with tight solver
tolerances, and closed forms where the problem has one. Every reference problem asserts
its own active set first, so a test cannot pass by differentiating a different branch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jconstrain as jc

TIGHT_SQP = jc.SQP(opt_tol=1e-12, viol_tol=1e-12)
TIGHT_ALM = jc.AugmentedLagrangian(opt_tol=1e-10, viol_tol=1e-10)
H = 1e-4  # central-difference step
RTOL = 1e-5


def outputs(sol: jc.Solution) -> jax.Array:
    """Everything differentiable in one vector: x, f, then the eq, ineq, lower and upper multipliers."""
    m = sol.multipliers
    parts = [sol.x, sol.f, m.eq, m.ineq, m.lower, m.upper]
    return jnp.concatenate([jnp.atleast_1d(ravel_pytree(p)[0]).astype(jnp.float64) for p in parts])


def implicit_and_differences(problem, x0, solver, args, h=H):
    """(solution at args, implicit Jacobian of `outputs` w.r.t. args (raveled), central
    differences of the same, statuses of the 2p perturbed solves); one compilation."""
    flat_args, unravel = ravel_pytree(args)

    def solve(a):
        return jc.solve(problem, x0, solver, args=a)

    @jax.jit
    def run(args, flat_args):
        # jax.jacobian of a vector-valued function of a pytree of args (reverse mode).
        jac, sol = jax.jacobian(lambda a: (outputs(s := solve(a)), s), has_aux=True)(args)
        steps = h * jnp.eye(flat_args.size)
        points = jnp.concatenate([flat_args + steps, flat_args - steps])
        values, statuses = jax.vmap(lambda a: (outputs(s := solve(unravel(a))), s.status))(points)
        return sol, jac, values, statuses

    sol, jac, values, statuses = run(args, flat_args)
    p = flat_args.size
    jac = np.concatenate([np.reshape(leaf, (leaf.shape[0], -1)) for leaf in jax.tree_util.tree_leaves(jac)], axis=1)
    fd = np.asarray((values[:p] - values[p:]) / (2 * h)).T
    return sol, jac, fd, np.asarray(statuses)


def assert_matches(jac, fd, rtol=RTOL):
    """Relative agreement: every entry within rtol of itself or of the largest entry."""
    assert np.all(np.isfinite(jac))
    assert np.max(np.abs(fd)) > 0.1, "the reference Jacobian is (nearly) zero: nothing is tested"
    np.testing.assert_allclose(jac, fd, rtol=rtol, atol=rtol * np.max(np.abs(fd)))


# ------------------------------------------------------------------ 1: active nonlinear inequalities, dict args

W1 = jnp.array([1.0, 2.0, 1.0])
NONLINEAR_INEQ = jc.Problem(
    objective=lambda x, a: jnp.sum(W1 * (x - a["target"]) ** 2) + 0.1 * jnp.exp(a["w"] * x[0]),
    ineq=lambda x, a: jnp.stack(
        [jnp.sum(x**2) - a["r"], x[1] - x[2] ** 2 - 0.2 * a["w"], jnp.sum(x) - 10.0]
    ),
)
ARGS1 = {"target": jnp.array([2.0, 1.0, 0.5]), "r": jnp.asarray(1.5), "w": jnp.asarray(0.7)}


def check_nonlinear_inequalities(solver):
    sol, jac, fd, statuses = implicit_and_differences(NONLINEAR_INEQ, jnp.zeros(3), solver, ARGS1)
    assert int(sol.status) == jc.Status.CONVERGED and np.all(statuses == jc.Status.CONVERGED)
    nu = np.asarray(sol.multipliers.ineq)
    assert np.all(nu[:2] > 0.5) and nu[2] == 0.0, nu  # two strongly active, one inactive
    assert_matches(jac, fd)


def test_active_inequalities_sqp():
    check_nonlinear_inequalities(TIGHT_SQP)


def test_active_inequalities_augmented_lagrangian():
    check_nonlinear_inequalities(TIGHT_ALM)


# ------------------------------------------------------------------ 2: nonlinear equalities, pytree constraints

EQUALITIES = jc.Problem(
    objective=lambda x, a: jnp.sum(x**2) + a[0] * x[0] * x[3] + jnp.sin(x[1]),
    eq=lambda x, a: {"sum": jnp.sum(x) - a[1], "curve": x[0] ** 2 - x[1] + a[2] * x[2] - 0.5},
)


def test_equalities_sqp():
    sol, jac, fd, statuses = implicit_and_differences(EQUALITIES, jnp.zeros(4), TIGHT_SQP, jnp.array([0.3, 2.0, 0.7]))
    assert int(sol.status) == jc.Status.CONVERGED and np.all(statuses == jc.Status.CONVERGED)
    assert all(abs(float(v)) > 0.05 for v in jax.tree_util.tree_leaves(sol.multipliers.eq))
    assert_matches(jac, fd)


# ------------------------------------------------------------------ 3: parametric QP with active bounds

_k1, _k2, _k3, _k4 = jax.random.split(jax.random.PRNGKey(0), 4)
_M = jax.random.normal(_k1, (4, 4))
Q = _M @ _M.T + 0.5 * jnp.eye(4)
B = jax.random.normal(_k2, (4, 3))
G = jax.random.normal(_k3, (3, 4))
C = jax.random.normal(_k4, (3, 3))
PARAMETRIC_QP = jc.Problem(
    objective=lambda x, a: 0.5 * x @ Q @ x + (jnp.array([1.0, -2.0, 0.5, -1.0]) + B @ a) @ x,
    eq=lambda x, a: jnp.sum(x, keepdims=True) - 1.0 - a[0],
    ineq=lambda x, a: G @ x - (jnp.array([0.2, 0.1, 0.3]) + 0.3 * C @ a),
    bounds=(jnp.array([-0.1, 0.0, -1.0, 0.0]), jnp.array([2.0, 0.5, 2.0, 2.0])),
)


def test_parametric_qp_sqp():
    sol, jac, fd, statuses = implicit_and_differences(PARAMETRIC_QP, jnp.zeros(4), TIGHT_SQP, jnp.array([0.1, -0.2, 0.3]))
    assert int(sol.status) == jc.Status.CONVERGED and np.all(statuses == jc.Status.CONVERGED)
    nu, upper = np.asarray(sol.multipliers.ineq), np.asarray(sol.multipliers.upper)
    assert nu[1] > 0.5 and nu[0] == 0 and nu[2] == 0, nu  # one active inequality
    assert upper[1] > 0.5 and np.all(np.delete(upper, 1) == 0), upper  # x1 at its upper bound
    assert np.all(np.asarray(sol.multipliers.lower) == 0)
    assert_matches(jac, fd)


# ------------------------------------------------------------------ vmap(grad), closed form

TARGET = jnp.array([2.0, 1.0])
DISC = jc.Problem(
    objective=lambda x, r: jnp.sum((x - TARGET) ** 2),
    ineq=lambda x, r: jnp.sum(x**2, keepdims=True) - r,
)


def disc_derivatives(r):
    """d/dr of (x0, x1, f, ν) for the projection of TARGET onto the disc ||x||² <= r:
    x = √r t/||t||, f = (||t|| - √r)², ν = ||t||/√r - 1 when r < ||t||², else x = t."""
    t = float(jnp.linalg.norm(TARGET))
    if r >= t**2:
        return np.zeros(4)
    s = np.sqrt(r)
    return np.array([*(np.asarray(TARGET) / (2 * s * t)), -(t - s) / s, -t / (2 * r**1.5)])


def test_vmap_of_grad_matches_closed_form_per_member():
    radii = np.array([0.5, 1.0, 2.0, 9.0])  # the last is inside: the constraint is inactive
    picks = np.eye(4)

    def scalar(r, pick):
        sol = jc.solve(DISC, jnp.zeros(2), TIGHT_SQP, args=r)
        return jnp.dot(pick, jnp.stack([sol.x[0], sol.x[1], sol.f, sol.multipliers.ineq[0]]))

    r_batch = jnp.asarray(np.repeat(radii, 4))
    pick_batch = jnp.asarray(np.tile(picks, (4, 1)))
    grads = jax.jit(jax.vmap(jax.grad(scalar)))(r_batch, pick_batch)
    expected = np.concatenate([disc_derivatives(r) for r in radii])
    np.testing.assert_allclose(grads, expected, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------ ProjectedGradient: fixed-point differentiation


def test_projected_gradient_simplex_is_the_sparsemax_jacobian():
    """min ½||x - a||² on the simplex is sparsemax(a); on its support S the Jacobian is
    I - 11ᵀ/|S|, zero elsewhere."""
    problem = jc.Problem(objective=lambda x, a: 0.5 * jnp.sum((x - a) ** 2))
    solver = jc.ProjectedGradient(projection=jc.projections.simplex(), opt_tol=1e-12)
    a = jnp.array([0.9, 0.5, -0.3, 0.1])
    run = jax.jit(jax.jacobian(lambda a: jc.solve(problem, jnp.full(4, 0.25), solver, args=a).x))
    expected = np.zeros((4, 4))
    expected[:2, :2] = np.eye(2) - 0.5
    np.testing.assert_allclose(run(a), expected, atol=1e-10)


def test_projected_gradient_box_matches_finite_differences():
    problem = jc.Problem(
        objective=lambda x, a: 0.5 * x @ Q @ x - a @ x + 0.1 * jnp.sum(x**4), bounds=(0.0, 1.0)
    )
    solver = jc.ProjectedGradient(opt_tol=1e-13)
    a = jnp.array([3.0, -1.0, 0.5, 2.0])
    sol, jac, fd, statuses = implicit_and_differences(problem, jnp.full(4, 0.5), solver, a)
    assert int(sol.status) == jc.Status.CONVERGED and np.all(statuses == jc.Status.CONVERGED)
    at_bounds = (np.asarray(sol.multipliers.lower) > 0.1) | (np.asarray(sol.multipliers.upper) > 0.1)
    assert at_bounds.any() and not at_bounds.all(), sol.x
    assert_matches(jac, fd)


# ------------------------------------------------------------------ bounds, x0, structure


def test_bounds_given_through_a_closure_and_x0_have_the_right_derivatives():
    """min (x0 - 2)² + (x1 + 1)² on x0 <= u, x1 >= 0: x = (u, 0), f = (2 - u)² + 1,
    ν_upper0 = 2(2 - u), ν_lower1 = 2 (constant)."""

    def solve(u, x0=jnp.array([0.5, 0.5])):
        problem = jc.Problem(
            objective=lambda x, a: (x[0] - 2.0) ** 2 + (x[1] + 1.0) ** 2,
            bounds=(jnp.array([-jnp.inf, 0.0]), jnp.stack([u, jnp.inf])),
        )
        sol = jc.solve(problem, x0, TIGHT_ALM)
        return jnp.stack([sol.x[0], sol.x[1], sol.f, sol.multipliers.upper[0], sol.multipliers.lower[1]])

    u = jnp.asarray(1.5)
    jac = jax.jit(jax.jacobian(solve))(u)
    np.testing.assert_allclose(jac, [1.0, 0.0, -2 * (2 - 1.5), -2.0, 0.0], atol=1e-7)
    # The solution does not depend on the starting point: zero derivative, not the loop's.
    d_x0 = jax.jit(jax.jacobian(solve, argnums=1))(u, jnp.array([0.5, 0.5]))
    np.testing.assert_array_equal(d_x0, 0.0)


def test_parameters_closed_over_by_the_problem_are_differentiable():
    """min ||x - t||² on x0 + x1 <= 1 with t closed over (not in args): for t0 + t1 > 1,
    x = t - (t0 + t1 - 1)/2 (1, 1) and f = (t0 + t1 - 1)²/2."""

    def solve(t):
        problem = jc.Problem(
            objective=lambda x, a: jnp.sum((x - t) ** 2), ineq=lambda x, a: jnp.sum(x, keepdims=True) - 1.0
        )
        sol = jc.solve(problem, jnp.zeros(2), TIGHT_ALM)
        return jnp.concatenate([sol.x, sol.f[None]])

    ts = jnp.array([[1.0, 0.5], [2.0, 0.0]])
    jacs = jax.jit(jax.vmap(jax.jacobian(solve)))(ts)
    for t, jac in zip(np.asarray(ts), np.asarray(jacs)):
        expected = np.array([[0.5, -0.5], [-0.5, 0.5], [t.sum() - 1, t.sum() - 1]])
        np.testing.assert_allclose(jac, expected, atol=1e-7)


def test_forward_and_reverse_mode_agree_and_integer_args_pass_through():
    problem = jc.Problem(
        objective=lambda x, a: jnp.sum((x - a["t"]) ** a["power"]),
        ineq=lambda x, a: jnp.sum(x, keepdims=True) - 1.0,
    )
    args = {"t": jnp.array([1.0, 0.5, -0.2]), "power": jnp.asarray(2)}  # an int leaf: not differentiated

    @jax.jit
    def jacobians(args):
        # The int leaf rides along in args (traced here) while t is differentiated.
        solve_x = lambda t: jc.solve(problem, jnp.zeros(3), TIGHT_ALM, args={**args, "t": t}).x
        return jax.jacrev(solve_x)(args["t"]), jax.jacfwd(solve_x)(args["t"])

    rev, fwd = jacobians(args)
    # x = t - (Σt - 1)/3: the Jacobian is I - 11ᵀ/3.
    np.testing.assert_allclose(rev, np.eye(3) - 1 / 3, atol=1e-8)
    np.testing.assert_allclose(fwd, rev, atol=1e-12)


def test_an_undifferentiated_solve_computes_nothing_extra():
    """The implicit rule is traced only when someone differentiates (no SVD otherwise)."""
    problem = jc.Problem(objective=lambda x, a: jnp.sum((x - a) ** 2), ineq=lambda x, a: x - 1.0)
    solve_f = lambda a: jc.solve(problem, jnp.zeros(2), jc.AugmentedLagrangian(), args=a).f
    a = jnp.array([2.0, 0.0])
    assert "svd" not in str(jax.make_jaxpr(solve_f)(a))
    assert "svd" in str(jax.make_jaxpr(jax.grad(solve_f))(a))


# ------------------------------------------------------------------ degenerate active sets

X0_1D = jnp.array([0.3])
TWICE = jc.Problem(  # x <= 0 stated twice: both active, LICQ fails
    objective=lambda x, a: jnp.sum((x - a) ** 2),
    ineq=lambda x, a: jnp.concatenate([x, 2.0 * x]),
)


def test_dependent_active_constraints_are_differentiable():
    """x <= 0 stated twice (LICQ fails, the multipliers' split is open) at a = 1:
    x*(a) = min(a, 0) = 0 near a = 1, so dx/da = 0; the least-norm KKT solve gives it."""
    grad = jax.jit(jax.grad(lambda a: jc.solve(TWICE, X0_1D, jc.AugmentedLagrangian(), args=a).x[0]))
    sol = jax.jit(lambda a: jc.solve(TWICE, X0_1D, jc.AugmentedLagrangian(), args=a))(1.0)
    assert int(sol.status) == jc.Status.CONVERGED and np.all(np.asarray(sol.multipliers.ineq) > 0.1)
    np.testing.assert_allclose(float(grad(1.0)), 0.0, atol=1e-8)


# Not locally unique: any x with x1 + x2 = a is optimal (the Hessian is singular along x).
FLAT = jc.Problem(objective=lambda x, a: (x[0] + x[1] - a) ** 2)


def test_non_unique_solution_raises_a_clear_error():
    solver = jc.AugmentedLagrangian()
    grad = jax.jit(jax.grad(lambda a: jc.solve(FLAT, jnp.zeros(2), solver, args=a).x[0]))
    sol = jax.jit(lambda a: jc.solve(FLAT, jnp.zeros(2), solver, args=a))(1.0)
    assert int(sol.status) == jc.Status.CONVERGED
    with pytest.raises(Exception, match="cannot differentiate this solution"):
        jax.block_until_ready(grad(1.0))


def test_singular_conditions_at_an_unconverged_point_give_nan_not_an_error():
    solver = jc.AugmentedLagrangian()
    run = jax.jit(
        lambda a: (
            jc.solve(FLAT, jnp.zeros(2), solver, args=a, max_steps=0).status,
            jax.grad(lambda a: jc.solve(FLAT, jnp.zeros(2), solver, args=a, max_steps=0).x[0])(a),
        )
    )
    status, grad = run(1.0)
    assert int(status) != jc.Status.CONVERGED
    assert np.isnan(grad)


def test_weakly_active_constraint_is_treated_as_inactive():
    """min (x - a)² on x <= 0 at a = 0: x*(a) = min(a, 0) has a kink; the constraint is
    active with multiplier 0 and the documented fallback gives the derivative of the
    branch where it is inactive, dx/da = 1, df/da = 0."""
    problem = jc.Problem(objective=lambda x, a: jnp.sum((x - a) ** 2), ineq=lambda x, a: x)
    solve = lambda a: jc.solve(problem, X0_1D, jc.AugmentedLagrangian(), args=a)
    sol, (dx, df) = jax.jit(lambda a: (solve(a), jax.jacobian(lambda a: (solve(a).x[0], solve(a).f))(a)))(0.0)
    assert abs(float(sol.x[0])) < 1e-8 and float(sol.multipliers.ineq[0]) < 1e-8  # weakly active
    np.testing.assert_allclose([dx, df], [1.0, 0.0], atol=1e-8)
