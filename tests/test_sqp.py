"""jc.SQP on smooth problems with known optima, and its practical tricks:
constraint folding, warm start, prescaling, bounds kept exactly, statuses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc
from problems import HS_PROBLEMS, check_solution


@pytest.mark.parametrize("tp", HS_PROBLEMS, ids=lambda tp: tp.name)
def test_sqp_reaches_known_optima(tp):
    sol = jax.jit(lambda x0: jc.solve(tp.problem, x0, jc.SQP(), args=tp.args))(tp.x0)
    check_solution(tp, sol, f_rtol=1e-6, viol_tol=1e-6, kkt_tol=1e-6)


def _many_halfspaces(m: int = 200):
    """min ||x - a||² s.t. x·u_i <= 1 for m random unit vectors u_i (x in R^3)."""
    rng = np.random.default_rng(0)
    U = rng.normal(size=(m, 3))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    a = jnp.array([2.0, 1.0, -1.5])
    problem = jc.Problem(objective=lambda x, _: jnp.sum((x - a) ** 2), ineq=lambda x, _: jnp.asarray(U) @ x - 1.0)
    return problem, U, a


def _folded_and_full():
    problem, U, a = _many_halfspaces()
    folded = jc.Problem(objective=problem.objective, ineq=jc.fold(problem.ineq, kind="ineq", norm="l2"))
    x0 = jnp.zeros(3)
    full = jax.jit(lambda x: jc.solve(problem, x, jc.SQP()))(x0)
    one = jax.jit(lambda x: jc.solve(folded, x, jc.SQP()))(x0)
    return full, one, U


def test_fold_keeps_f_and_feasibility_and_shrinks_the_subproblem():
    full, one, U = _folded_and_full()
    assert jc.Status(int(full.status)) == jc.Status.CONVERGED
    assert one.multipliers.ineq.shape == (1,)  # one folded constraint instead of 200
    assert full.multipliers.ineq.shape == (200,)
    assert float(jnp.max(jnp.asarray(U) @ one.x - 1.0)) <= 1e-6
    np.testing.assert_allclose(float(one.f), float(full.f), rtol=1e-6)


@pytest.mark.xfail(
    strict=False,
    reason="the folded l2 constraint is nonsmooth where it vanishes and SQP ends STALLED near the solution: "
    "measured |x_fold - x_full| = 4.3e-6 with the default Powell damping (3.8e-7 without it; l1 and linf "
    "folds 4e-7..6e-6)",
)
def test_fold_keeps_the_solution_to_1e_6():
    full, one, _ = _folded_and_full()
    np.testing.assert_allclose(one.x, full.x, atol=1e-6)


def test_fold_rejects_bad_options():
    with pytest.raises(ValueError, match="kind"):
        jc.fold(lambda x, a: x, kind="both")
    with pytest.raises(ValueError, match="norm"):
        jc.fold(lambda x, a: x, norm="l3")


def test_warm_start_reuses_the_bfgs_memory():
    """Continuation: HS71 with its equality shifted by a. Started from the previous
    solution, the warm start (previous H and μ) needs fewer iterations than a cold one."""
    tp = next(p for p in HS_PROBLEMS if p.name == "hs71")

    def shifted(a):
        return jc.Problem(
            objective=tp.problem.objective,
            eq=lambda x, _: tp.problem.eq(x, None) + a,
            ineq=tp.problem.ineq,
            bounds=tp.problem.bounds,
        )

    cold = jax.jit(lambda x0, a: jc.solve(shifted(a), x0, jc.SQP()))
    warm = jax.jit(lambda x0, a, state: jc.solve(shifted(a), x0, jc.SQP(), warm_start=state))
    first = cold(tp.x0, 0.0)
    saved = 0
    for a in (0.1, 0.5, 1.0):
        c, w = cold(first.x, a), warm(first.x, a, first.state)
        assert jc.Status(int(w.status)) == jc.Status.CONVERGED
        np.testing.assert_allclose(float(w.f), float(c.f), rtol=1e-7)
        assert int(w.stats.iterations) <= int(c.stats.iterations)
        saved += int(c.stats.iterations) - int(w.stats.iterations)
    assert saved >= 2


def test_prescaling_handles_a_badly_scaled_objective():
    """HS71 with its objective multiplied by 1e6: prescaling brings the gradient to
    O(100) and the solve converges like the original; without it the exact penalty
    needs μ ~ 1e-6 and the run takes longer (or fails)."""
    tp = next(p for p in HS_PROBLEMS if p.name == "hs71")
    scaled = jc.Problem(
        objective=lambda x, a: 1e6 * tp.problem.objective(x, a),
        eq=tp.problem.eq,
        ineq=tp.problem.ineq,
        bounds=tp.problem.bounds,
    )
    on = jax.jit(lambda x0: jc.solve(scaled, x0, jc.SQP(), max_steps=200))(tp.x0)
    off = jax.jit(lambda x0: jc.solve(scaled, x0, jc.SQP(prescale=False), max_steps=200))(tp.x0)
    assert jc.Status(int(on.status)) == jc.Status.CONVERGED
    np.testing.assert_allclose(float(on.f) / 1e6, tp.f_star, rtol=1e-6)
    off_solved = jc.Status(int(off.status)) == jc.Status.CONVERGED and abs(float(off.f) / 1e6 - tp.f_star) <= 1e-6 * tp.f_star
    assert (not off_solved) or int(on.stats.iterations) < int(off.stats.iterations)


def test_bounds_are_kept_exactly_on_every_step():
    """log(x) is NaN for x < 0: with the bound x >= 0 the iterates never leave the box."""
    problem = jc.Problem(
        objective=lambda x, _: jnp.sum(x) - jnp.sum(jnp.log(x + 1e-3)) * 0.1,
        bounds=(0.0, 10.0),
    )
    sol = jax.jit(lambda x0: jc.solve(problem, x0, jc.SQP()))(jnp.array([5.0, 0.5]))
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    # Stationary point of x - 0.1 log(x + 1e-3): x = 0.1 - 1e-3.
    np.testing.assert_allclose(sol.x, 0.099, rtol=1e-6)


def test_unbounded_problem_is_reported():
    problem = jc.Problem(objective=lambda x, _: -x[0] + x[1] ** 2, ineq=lambda x, _: x[1:] - 1.0)
    sol = jax.jit(lambda x0: jc.solve(problem, x0, jc.SQP(), max_steps=100))(jnp.zeros(2))
    assert jc.Status(int(sol.status)) in (jc.Status.UNBOUNDED, jc.Status.MAX_STEPS)
    assert jc.Status(int(sol.status)) != jc.Status.CONVERGED


def test_infeasible_problem_is_reported():
    problem = jc.Problem(objective=lambda x, _: jnp.sum(x**2), ineq=lambda x, _: jnp.array([x[0] ** 2 + 1.0]))
    sol = jax.jit(lambda x0: jc.solve(problem, x0, jc.SQP(), max_steps=200))(jnp.array([1.0, 1.0]))
    assert jc.Status(int(sol.status)) == jc.Status.INFEASIBLE
    np.testing.assert_allclose(sol.x[0], 0.0, atol=1e-6)  # the most feasible point
