"""jc.SQP's parts, each alone: the model (`sqp_model`), the inverse Hessian
(`sqp_hessian`), the steering direction (`sqp_direction`), the search (`sqp_search`),
the stationarity measure (`sqp_stationarity`) and the escapes (`sqp_state`)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc
from jconstrain._problem import flatten
from jconstrain._solvers import sqp_direction, sqp_hessian, sqp_model, sqp_search, sqp_state, sqp_stationarity

ONES = lambda m: jnp.ones((m,))  # noqa: E731 (unit scales)


def _flat(problem: jc.Problem, x0):
    flat, z0 = flatten(problem, jnp.asarray(x0), None)
    return flat, z0


# A circle equality, one inequality and a box: min (x0 - 2)² + (x1 - 1)², x0² + x1² = 1,
# x0 - x1 <= 0.5, x in [-2, 2]². Its solution is on the circle toward (2, 1) but cut by
# the inequality: found below by jc.SQP and checked through the parts.
PROBLEM = jc.Problem(
    objective=lambda x, a: (x[0] - 2.0) ** 2 + (x[1] - 1.0) ** 2,
    eq=lambda x, a: x[0] ** 2 + x[1] ** 2 - 1.0,
    ineq=lambda x, a: x[0] - x[1] - 0.5,
    bounds=(-2.0, 2.0),
)


def _model(z):
    flat, _ = _flat(PROBLEM, z)
    rows = sqp_model.stacked_rows(flat)
    m = rows.is_eq.shape[0]
    return flat, rows, sqp_model.evaluate(flat, jnp.asarray(z), None, jnp.ones(()), ONES(m))


# ------------------------------------------------------------------ model


def test_model_stacks_rows_and_derivatives():
    z = jnp.array([0.3, -0.4])
    flat, rows, model = _model(z)
    # Rows: 1 equality, 1 inequality, 2 lower and 2 upper bound rows.
    assert rows.is_eq.tolist() == [True, False, False, False, False, False]
    assert rows.is_bound.tolist() == [False, False, True, True, True, True]
    np.testing.assert_allclose(model.g, jax.grad(lambda x: PROBLEM.objective(x, None))(z))
    np.testing.assert_allclose(model.c, [0.25 - 1.0, 0.7 - 0.5, -2.3, -1.6, -1.7, -2.4], atol=1e-15)
    np.testing.assert_allclose(model.J[0], 2 * z)
    np.testing.assert_allclose(model.J[2:], np.concatenate([-np.eye(2), np.eye(2)]))
    v, vmax = sqp_model.violations(model.c, rows)
    np.testing.assert_allclose([v, vmax], [0.75 + 0.2, 0.75])


def test_prescaling_caps_large_gradients_and_lifts_tiny_ones():
    model = sqp_model.Model(
        z=jnp.zeros(2), f=jnp.asarray(1.0), g=jnp.array([1e4, 0.0]), c=jnp.zeros(3),
        J=jnp.array([[1e3, 0.0], [0.5, 0.0], [1e-6, 0.0]]),
    )
    scale_f, scale_c = sqp_model.prescaling(model, 100.0)
    np.testing.assert_allclose(scale_f, 1e-2)
    np.testing.assert_allclose(scale_c, [0.1, 1.0, 1e4])  # tiny row lifted to ||∇|| = 1e-2


# ------------------------------------------------------------------ inverse Hessian


def test_dense_and_limited_memory_agree_and_meet_the_secant_equation():
    rng = np.random.default_rng(0)
    n = 5
    A = rng.normal(size=(n, n))
    A = jnp.asarray(A @ A.T + n * np.eye(n))  # SPD: y = A s has sᵀy > 0
    dense = sqp_hessian.identity(n, jnp.float64, None)
    limited = sqp_hessian.identity(n, jnp.float64, 4)
    v = jnp.arange(1.0, n + 1)
    np.testing.assert_array_equal(sqp_hessian.apply(dense, v), v)
    np.testing.assert_array_equal(sqp_hessian.apply(limited, v), v)
    for k in range(3):
        s = jnp.asarray(rng.normal(size=n))
        y = A @ s
        first = jnp.asarray(k == 0)
        dense = sqp_hessian.update(dense, s, y, first, 1e-4, 0.0)
        limited = sqp_hessian.update(limited, s, y, first, 1e-4, 0.0)
        np.testing.assert_allclose(sqp_hessian.apply(dense, y), s, rtol=1e-10)
        np.testing.assert_allclose(sqp_hessian.apply(limited, y), s, rtol=1e-10)
    np.testing.assert_allclose(sqp_hessian.apply(dense, jnp.eye(n)), sqp_hessian.apply(limited, jnp.eye(n)), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ direction


def test_polished_box_qp_meets_its_kkt_conditions():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(6, 6))
    M = jnp.asarray(B @ B.T + 0.1 * np.eye(6))
    q = jnp.asarray(rng.normal(size=6) * 3)
    lo, hi = -jnp.ones(6), jnp.ones(6)
    y = sqp_direction.polish_box_qp(M, q, lo, hi, jc.qp.solve(M, q, lower=lo, upper=hi))
    grad = M @ y + q
    assert np.all((y >= lo) & (y <= hi))
    # Projected gradient: zero where free, pointing out of the box where at a bound.
    free = (y > lo + 1e-12) & (y < hi - 1e-12)
    assert np.any(~free)
    np.testing.assert_allclose(grad[free], 0.0, atol=1e-12)
    assert np.all(grad[y <= lo + 1e-12] >= -1e-12) and np.all(grad[y >= hi - 1e-12] <= 1e-12)


def test_direction_solves_the_linearised_constraints_and_descends():
    """With H = I and μ = 1e-2, from an infeasible point inside the box: the QP's d meets
    the linearised equality (its dual y_E lies strictly inside [-1, 1]: the penalty is
    exact there), and Δ = -dᵀH⁻¹d < 0."""
    z = jnp.array([0.2, 0.5])
    flat, rows, model = _model(z)
    H = sqp_hessian.identity(2, jnp.float64, None)
    mu = jnp.asarray(1e-2)
    d, y, ok = sqp_direction.direction(model, rows, H, mu)
    assert bool(ok)
    assert abs(float(y[0])) < 1.0
    np.testing.assert_allclose(model.c[0] + model.J[0] @ d, 0.0, atol=1e-10)
    d2, decrease = sqp_direction.descent(model, rows, H, mu, d, y, ok)
    np.testing.assert_array_equal(d2, d)
    np.testing.assert_allclose(decrease, -jnp.dot(d, d), rtol=1e-10)
    assert float(decrease) < 0


def test_steering_keeps_a_feasible_point_linearly_feasible():
    """At a feasible point where μ = 1 is too large for an exact penalty (the multiplier
    of the circle exceeds 1/μ), steering shrinks μ until d no longer leaves the linearised
    feasible set (up to the slack), and reports the μ it used."""
    z = jnp.array([np.cos(1.2), np.sin(1.2)])  # on the circle, x0 - x1 < 0.5: feasible
    flat, rows, model = _model(z)
    H = sqp_hessian.identity(2, jnp.float64, None)
    v, _ = sqp_model.violations(model.c, rows)
    assert float(v) < 1e-12
    d, y, ok, mu, l_ref, exhausted = sqp_direction.steer(
        model, rows, H, jnp.asarray(1.0), v, jnp.asarray(True),
        c_viol=0.1, c_mu=0.9, steering_steps=10, viol_tol=1e-6,
    )
    slack = sqp_direction.steering_slack(model, rows, 1e-6)
    assert bool(ok) and not bool(exhausted)
    assert float(sqp_direction.linear_reduction(model, rows, d, v)) >= -float(slack)
    assert float(mu) < 1.0


# ------------------------------------------------------------------ search


def test_path_keeps_the_bounds_and_the_expansion_stops_at_the_box():
    flat, rows, model = _model(jnp.array([1.5, 0.0]))
    d = jnp.array([1.0, -0.25])
    z, direction = sqp_search.path(flat, model.z, d, 2.0)
    np.testing.assert_allclose(z, [2.0, -0.5])  # x0 clipped at its upper bound
    np.testing.assert_array_equal(direction, [0.0, -0.25])
    np.testing.assert_allclose(sqp_search.expansion_limit(flat, model.z, d), 1.0)  # 0.5 of room: at least 1
    np.testing.assert_allclose(sqp_search.expansion_limit(flat, model.z, 0.1 * d), 5.0)


def test_search_takes_the_newton_step_on_a_quadratic():
    """min ||x - a||², no constraints, H the exact inverse Hessian: the unit step lands on a."""
    a = jnp.array([0.3, -0.7, 1.1])
    problem = jc.Problem(lambda x, _: jnp.sum((x - a) ** 2))
    flat, z0 = _flat(problem, jnp.zeros(3))
    rows = sqp_model.stacked_rows(flat)
    model = sqp_model.evaluate(flat, z0, None, jnp.ones(()), jnp.ones((0,)))
    H = 0.5 * jnp.eye(3)
    d = -H @ model.g
    move = sqp_search.search(
        flat, None, rows, model, H, d, jnp.zeros((0,)), jnp.asarray(1.0), jnp.asarray(0.0), jnp.dot(d, model.g),
        jnp.ones(()), jnp.ones((0,)), jnp.asarray(True), c1=1e-4, c2=0.5, viol_tol=1e-6,
    )
    assert bool(move.moved)
    np.testing.assert_allclose(move.t, 1.0)
    np.testing.assert_allclose(move.z, a, atol=1e-15)


# ------------------------------------------------------------------ stationarity


def test_samples_ring_buffer_wraps():
    samples = sqp_stationarity.first_samples(jnp.zeros(2), jnp.ones(2), 3)
    for k in range(4):
        samples = sqp_stationarity.add_sample(samples, jnp.full(2, k + 1.0), jnp.full(2, -k), jnp.asarray(k), jnp.asarray(True))
    # Iteration k writes slot (k + 1) mod 3: the last three iterates, newest in slot 1.
    np.testing.assert_array_equal(samples.z[:, 0], [3.0, 4.0, 2.0])
    assert samples.valid.all()
    kept = sqp_stationarity.add_sample(samples, jnp.full(2, 9.0), jnp.full(2, 9.0), jnp.asarray(7), jnp.asarray(False))
    np.testing.assert_array_equal(kept.z, samples.z)


@pytest.mark.parametrize("at_solution", [True, False])
def test_measure_vanishes_at_the_solution_only(at_solution):
    sol = jc.solve(PROBLEM, jnp.array([0.5, 0.5]), jc.SQP())
    assert sol.status_name == "CONVERGED"
    z = sol.x if at_solution else jnp.array([np.cos(1.2), np.sin(1.2)])
    flat, rows, model = _model(z)
    samples = sqp_stationarity.first_samples(model.z, model.g, 4)
    value, lam = sqp_stationarity.measure(model, rows, jnp.asarray(1e-2), samples, evaldist=1e-9, viol_tol=1e-6)
    if at_solution:
        assert float(value) < 1e-7
        # λ (of the scaled rows, here unit scales) matches the solution's multipliers.
        np.testing.assert_allclose(lam[:2], [sol.multipliers.eq, sol.multipliers.ineq], rtol=1e-5)
    else:
        assert float(value) > 1e-2


# ------------------------------------------------------------------ escapes


def _far_state():
    """jc.SQP's first state on the exp chain (x1 >= exp(x0), x2 >= exp(x1), bounded) from
    a far start, where the prescaling shrinks both rows by 1e-8 and more."""
    problem = jc.Problem(
        objective=lambda x, a: -x[0],
        ineq=lambda x, a: jnp.stack([jnp.exp(x[0]) - x[1], jnp.exp(x[1]) - x[2]]),
        bounds=(jnp.zeros(3), jnp.array([100.0, 100.0, 10.0])),
    )
    flat, z0 = _flat(problem, [23.3, 73.8, 4.7])
    return flat, jc.SQP().init(flat, z0, None, None)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_escape_k_restarts_within_its_radius_prescaled_there(k):
    flat, state = _far_state()
    rows = sqp_model.stacked_rows(flat)
    state = eqx.tree_at(lambda s: s.escapes, state, jnp.asarray(k - 1, jnp.int32))
    out = sqp_state.escape(flat, state, None, 1e-6, None, 100.0)
    z, z_new = np.asarray(state.model.z), np.asarray(out.model.z)
    # The k-th escape: within 10^(k-3) max(1, ||z||_∞), inside the bounds.
    assert 0 < np.max(np.abs(z_new - z)) <= 10.0 ** (k - 3) * max(1.0, np.max(np.abs(z)))
    assert np.all((z_new >= flat.lower) & (z_new <= flat.upper))
    # Prescaled at the new point, the model in those scales, H = I, counts moved on.
    unscaled = sqp_model.evaluate(flat, out.model.z, None, jnp.ones(()), ONES(rows.is_eq.shape[0]))
    scale_f, scale_c = sqp_model.prescaling(unscaled, 100.0)
    np.testing.assert_allclose(out.scale_c, scale_c, rtol=1e-12)
    np.testing.assert_allclose(out.model.c, unscaled.c * scale_c, rtol=1e-12)
    np.testing.assert_array_equal(out.H, np.eye(3))
    assert int(out.escapes) == k and int(out.iteration) == int(state.iteration) + 1
    # The most feasible record (x0) is measured again in the new scales, then compared
    # with the new point.
    x0_c = sqp_model.evaluate(flat, state.model.z, None, scale_f, scale_c).c
    l1 = min(float(sqp_model.violations(x0_c, rows)[0]), float(sqp_model.violations(out.model.c, rows)[0]))
    np.testing.assert_allclose(out.most_feasible.l1_violation, l1, rtol=1e-12)


def test_first_feasible_point_after_an_escape_starts_afresh():
    flat, state = _far_state()
    before = eqx.tree_at(lambda s: (s.escapes, s.mu), state, (jnp.asarray(1, jnp.int32), jnp.asarray(1e-7)))
    after = eqx.tree_at(lambda s: (s.has_feasible, s.H), before, (jnp.asarray(True), 5.0 * before.H))
    out = sqp_state.after_escape(before, after, 1.0, 100.0, None)
    assert float(out.mu) == 1.0
    np.testing.assert_array_equal(out.H, np.eye(3))
    # Not the first feasible point, or no escape before it: left as it is.
    feasible_before = eqx.tree_at(lambda s: s.has_feasible, before, jnp.asarray(True))
    no_escape = eqx.tree_at(lambda s: s.escapes, before, jnp.asarray(0, jnp.int32))
    for kept in (feasible_before, no_escape):
        out = sqp_state.after_escape(kept, after, 1.0, 100.0, None)
        assert float(out.mu) == 1e-7
        np.testing.assert_array_equal(out.H, after.H)
