"""Issue #16, "the first hour of a new user": float32 solves, settings checked before
tracing, readable Solutions, jc.train defaults, one status for one situation, projections
at any magnitude, derivatives at degenerate but differentiable solutions."""

from __future__ import annotations

import dataclasses
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from problems import HS71

import jconstrain as jc

F32 = jnp.float32

README = jc.Problem(
    objective=lambda x, a: x["w"][0] * x["w"][3] * jnp.sum(x["w"][:3]) + x["w"][2],
    eq=lambda x, a: jnp.sum(x["w"] ** 2) - a,
    ineq=lambda x, a: 25.0 - jnp.prod(x["w"]),
    bounds=(1.0, 5.0),
)
F_STAR = 17.0140173


# ------------------------------------------------------------------ float32


@pytest.mark.slow
@pytest.mark.parametrize("solver", [jc.SQP(), jc.AugmentedLagrangian(), jc.Penalty()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("case", ["readme", "hs71"])
def test_float32_readme_and_hs71_converge(solver, case):
    """Without x64 in effect for the data (float32 x0), under jit: CONVERGED, x float32,
    f within 1e-5 relative of f* (float32 accuracy), violation within 1e-4."""
    if case == "readme":
        problem, x0, args = README, {"w": jnp.array([1.0, 5.0, 5.0, 1.0], F32)}, F32(40.0)
    else:
        problem, x0, args = HS71.problem, jnp.asarray(HS71.x0, F32), None
    sol = jax.jit(lambda x0, a: jc.solve(problem, x0, solver, args=a))(x0, args)
    x = sol.x["w"] if case == "readme" else sol.x
    assert x.dtype == F32 and sol.f.dtype == F32
    assert sol.status_name == "CONVERGED", sol.summary()
    assert abs(float(sol.f) - F_STAR) <= 1e-5 * F_STAR, sol.summary()
    assert float(sol.stats.violation) <= 1e-4


# ------------------------------------------------------------------ settings

# One out-of-range value per numeric setting. A new numeric field without an entry here
# fails `test_every_numeric_setting_has_a_bad_value`.
BAD = {
    jc.SQP: dict(
        opt_tol=-1.0, viol_tol=-1.0, mu0=-1.0, c_viol=1.5, c_mu=0.0, c1=2.0, c2=1e-5, bfgs_damping=1.0,
        curvature_damping=-0.1, evaldist=-1.0, step_tol=-1.0, prescale_threshold=0.0, unbounded_below=math.nan,
        steering_steps=-1, ngrad=0, max_steps=-1, max_search_failures=0, max_escapes=-1, memory=0,
    ),
    jc.AugmentedLagrangian: dict(
        opt_tol=-1.0, viol_tol=-1.0, rho0=-1.0, rho_growth=0.5, rho_decrease=1.0, rho_min=0.0, rho_max=1.0,
        inner_tol0=0.0, multiplier_max=-1.0, unbounded_below=math.nan, max_steps=-1, inner_max_steps=0,
        max_escapes=-1,
    ),
    jc.Penalty: dict(
        opt_tol=-1.0, viol_tol=-1.0, rho0=-5.0, rho_growth=1.0, rho_max=1.0, unbounded_below=math.nan,
        max_steps=-1, inner_max_steps=0, max_escapes=-1,
    ),
    jc.ProjectedGradient: dict(
        opt_tol=-1.0, viol_tol=-1.0, step_min=0.0, step_max=1e-40, armijo=1.0, shrink_min=0.0, shrink_max=1.0,
        unbounded_below=math.nan, max_steps=-1, memory=0, max_backtracks=0,
    ),
    jc.newton: dict(c1=0.0, max_backtracks=-1, max_step=0.0, max_dim=0),
    jc.train.constrained: dict(rho=0.0, dual_lr=-1.0, pi_gains=(-1.0, 1.0), pi_ema=1.0),
}


NOT_NUMERIC = {"optimizer", "projection", "primal", "formulation"}


def _numeric_settings(target) -> list[str]:
    """The float/int settings of a solver class (its dataclass fields) or a factory (its
    parameters), read from the code: numeric defaults, tuples of numbers, and optional
    numbers (default None, e.g. SQP.ngrad, train's dual_lr)."""
    if isinstance(target, type):
        items = [(f.name, f.default) for f in dataclasses.fields(target)]
    else:
        items = [(p.name, p.default) for p in inspect.signature(target).parameters.values()]
    number = lambda d: isinstance(d, (int, float)) and not isinstance(d, bool)
    numeric = lambda d: number(d) or d is None or (isinstance(d, tuple) and all(map(number, d)))
    return sorted(name for name, default in items if numeric(default) and name not in NOT_NUMERIC)


@pytest.mark.parametrize("target", list(BAD), ids=lambda t: t.__name__)
def test_every_numeric_setting_has_a_bad_value(target):
    assert sorted(BAD[target]) == _numeric_settings(target)


def _build(target, **kwargs):
    if target is jc.train.constrained:
        return target(optax.adam(1e-3), **kwargs)
    return target(**kwargs)


@pytest.mark.parametrize(
    "target, name", [(t, n) for t in BAD for n in BAD[t]], ids=lambda v: getattr(v, "__name__", str(v))
)
def test_out_of_range_setting_raises_naming_it(target, name):
    _build(target)  # the defaults are valid
    with pytest.raises(ValueError, match=name.split("[")[0]):
        _build(target, **{name: BAD[target][name]})


def test_issue_settings_raise_before_tracing():
    for make in (
        lambda: jc.Penalty(rho0=-5),
        lambda: jc.SQP(mu0=-1),
        lambda: jc.SQP(c1=2.0),
        lambda: jc.AugmentedLagrangian(rho_growth=0.5),
        lambda: jc.AugmentedLagrangian(rho0=-1),
        lambda: jc.AugmentedLagrangian(rho0=100.0, rho_max=10.0),
    ):
        with pytest.raises(ValueError):
            make()


def test_traced_settings_pass_under_vmap():
    tols = jax.vmap(lambda t: jc.SQP(opt_tol=t, c1=t).opt_tol)(jnp.full(3, 1e-4))
    np.testing.assert_array_equal(tols, 1e-4)


def test_args_none_is_named_in_the_error():
    problem = jc.Problem(objective=lambda x, a: jnp.sum((x - a[0]) ** 2))
    with pytest.raises(TypeError, match="args is None"):
        jc.solve(problem, jnp.zeros(2), jc.Penalty())


# ------------------------------------------------------------------ reading results


def test_solution_names_its_status():
    sol = jc.solve(HS71.problem, HS71.x0, jc.Penalty())
    assert sol.status_name == jc.Status(int(sol.status)).name == "CONVERGED"
    line = sol.summary()
    assert line.startswith("CONVERGED: f = ") and "\n" not in line
    assert f"{int(sol.stats.iterations)} iterations" in line
    assert "CONVERGED" in str(sol) and "CONVERGED" in repr(sol)
    capped = jc.solve(HS71.problem, HS71.x0, jc.Penalty(), max_steps=1)
    assert str(capped).startswith("Solution(MAX_STEPS:")


def test_batch_of_64_is_summarised_in_one_line():
    """62 centres inside sum(x) <= 1 (CONVERGED at once), 2 outside (need ρ to grow:
    MAX_STEPS within 2 steps)."""
    problem = jc.Problem(objective=lambda x, a: jnp.sum((x - a) ** 2), ineq=lambda x, a: jnp.sum(x) - 1.0)
    centres = jnp.stack([jnp.linspace(-1.0, 0.4, 64), jnp.zeros(64)], axis=1).at[:2, 1].set(5.0)
    sols = jax.vmap(lambda c: jc.solve(problem, jnp.zeros(2), jc.Penalty(), c, max_steps=2))(centres)
    assert sols.status_name[:3] == ["MAX_STEPS", "MAX_STEPS", "CONVERGED"]
    assert sols.summary() == "64 solves: 62 CONVERGED, 2 MAX_STEPS"
    assert str(sols) == "Solution(64 solves: 62 CONVERGED, 2 MAX_STEPS)"


def test_verbose_under_vmap_labels_members_in_order(capsys):
    problem = jc.Problem(objective=lambda x, a: jnp.sum((x - a) ** 2), ineq=lambda x, a: jnp.sum(x) - 1.0)
    centres = jnp.array([[0.1, 0.2], [3.0, 0.0], [2.0, 2.0]])
    sols = jax.jit(jax.vmap(lambda c: jc.solve(problem, jnp.zeros(2), jc.Penalty(), c, verbose=True)))(centres)
    jax.block_until_ready(sols)
    jax.effects_barrier()
    lines = capsys.readouterr().out.splitlines()
    closing = [line for line in lines if ": " in line and line.startswith("#")]
    assert [line.split()[0] for line in closing] == ["#0", "#1", "#2"]
    for member, line in enumerate(closing):
        assert f"{int(sols.stats.iterations[member])} iterations" in line
    assert lines[-1] == sols.summary()
    rows = [line for line in lines if line.startswith("#") and ": " not in line]
    assert len(rows) == sum(int(k) + 1 for k in sols.stats.iterations)


# ------------------------------------------------------------------ jc.train


def test_train_constrained_defaults_run_a_rate_constraint():
    """Defaults only: jc.train.constrained(optax.adam(1e-3)) (the "lagrangian"
    formulation, dual_lr=None) and a scalar constraint declared with num_ineq=1: maximise
    a rate mean(sigmoid(x + b)) subject to rate <= 0.3. It runs, and ends feasible (the
simultaneous primal-dual dynamics with the default η = ρ = 1 oscillate slowly: the
rate first undershoots its cap)."""
    xs = jax.random.normal(jax.random.PRNGKey(0), (256,))
    tx = jc.train.constrained(optax.adam(1e-3))

    def fn(b, batch):
        rate = jnp.mean(jax.nn.sigmoid(batch + b))
        return -rate, jc.train.Constraints(ineq=rate - 0.3)

    params = jnp.asarray(0.0)
    state = tx.init(params, num_ineq=1)
    step = jax.jit(lambda p, s: jc.train.step(tx, s, p, fn, xs))
    rates, nus = [], []
    for _ in range(4000):
        params, state, info = step(params, state)
        rates.append(float(info.ineq) + 0.3)
        nus.append(float(state.nu[0]))
    assert state.nu.shape == (1,)
    assert rates[0] > 0.45  # infeasible at the start (rate 0.5) ...
    assert max(nus) > 1.0  # ... the multiplier grows while it is violated ...
    assert rates[-1] <= 0.3 + 1e-2  # ... and the run ends feasible
    assert np.all(np.isfinite(rates)) and np.isfinite(float(params))


# ------------------------------------------------------------------ one status


def test_constraint_nan_everywhere_but_x0_is_nonfinite_for_every_solver():
    x0 = jnp.array([0.5, 0.5])
    ineq = lambda x, a: jnp.where(jnp.all(x == x0), jnp.sum(x) - 2.0, jnp.nan)[None]
    problem = jc.Problem(objective=lambda x, a: jnp.sum((x - 1.0) ** 2), ineq=ineq)
    for solver in (jc.SQP(), jc.AugmentedLagrangian(), jc.Penalty()):
        sol = jc.solve(problem, x0, solver)
        assert sol.status_name == "NONFINITE", (type(solver).__name__, sol.summary())
        np.testing.assert_array_equal(sol.x, x0)


# ------------------------------------------------------------------ projections


@pytest.mark.parametrize("dtype, big", [(jnp.float64, 1e16), (jnp.float64, 1e300), (jnp.float32, 2e7), (jnp.float32, 1e30)])
def test_simplex_and_l1_ball_exact_at_any_magnitude(dtype, big):
    # optax's own answers, computed on the same values in float64 (its float32 path trips
    # over a dtype mismatch when x64 is enabled, as in this suite).
    for x in ([big, 0.0], [0.0, big, -3.0], [-big, 1.0]):
        x = jnp.array(x, dtype)
        x64 = np.asarray(x, np.float64)
        np.testing.assert_allclose(
            jc.projections.simplex(1.0)(x), optax.projections.projection_simplex(x64, 1.0), atol=10 * np.finfo(dtype).eps
        )
        ours = jc.projections.l1_ball(1.0)(x)
        np.testing.assert_allclose(ours, optax.projections.projection_l1_ball(x64, 1.0), atol=10 * np.finfo(dtype).eps)
        assert abs(float(jnp.sum(jnp.abs(ours))) - 1.0) <= 10 * np.finfo(dtype).eps
    np.testing.assert_array_equal(jc.projections.simplex(1.0)(jnp.array([big, 0.0], dtype)), [1.0, 0.0])


@pytest.mark.parametrize("dtype, big", [(jnp.float64, 1e200), (jnp.float64, 1e-200), (jnp.float32, 1e30)])
def test_l2_ball_and_sphere_at_extreme_magnitudes(dtype, big):
    x = jnp.array([3.0, -4.0], dtype) * big
    expected = np.array([0.6, -0.8])
    np.testing.assert_allclose(jc.projections.sphere(1.0)(x), expected, rtol=10 * np.finfo(dtype).eps)
    if big > 1:
        np.testing.assert_allclose(jc.projections.l2_ball(1.0)(x), expected, rtol=10 * np.finfo(dtype).eps)
    # Where optax's norm does not overflow, ours agrees with it.
    x = jnp.array([3.0, -4.0], dtype) * 1e3
    np.testing.assert_allclose(
        jc.projections.l2_ball(1.0)(x), optax.projections.projection_l2_ball(x, 1.0), rtol=10 * np.finfo(dtype).eps
    )


# ------------------------------------------------------------------ degenerate KKT


@pytest.mark.parametrize("solver", [jc.SQP(), jc.AugmentedLagrangian()], ids=lambda s: type(s).__name__)
def test_duplicated_active_constraint_is_differentiable(solver):
    """min (x1 - 2)² + (x2 - 1)² s.t. x1 + x2 <= a, stated twice (LICQ fails, the
    multipliers' split is open): dx/da = (1/2, 1/2) from the KKT system's least-norm
    solve, matching central differences."""
    ineq = lambda x, a: jnp.stack([x[0] + x[1] - a, x[0] + x[1] - a])
    problem = jc.Problem(objective=lambda x, a: (x[0] - 2.0) ** 2 + (x[1] - 1.0) ** 2, ineq=ineq)
    x_of = lambda a: jc.solve(problem, jnp.zeros(2), solver, a).x
    sol = jc.solve(problem, jnp.zeros(2), solver, 1.0)
    assert sol.status_name == "CONVERGED" and np.all(np.asarray(sol.multipliers.ineq) > 0.1)
    J = jax.jacobian(x_of)(1.0)
    h = 1e-3
    fd = (x_of(1.0 + h) - x_of(1.0 - h)) / (2 * h)
    np.testing.assert_allclose(J, fd, atol=1e-5)
    np.testing.assert_allclose(J, [0.5, 0.5], atol=1e-5)
