"""Tests of `jc.AugmentedLagrangian` (jconstrain/solvers/alm.py) and the ALM formulation terms."""

from __future__ import annotations

import functools
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from problems import (
    DICT_PROBLEM,
    HS35,
    HS71,
    HS_PROBLEMS,
    check_solution,
    disc_projection_problem,
    disc_projection_solution,
    kkt_residual,
)

import jconstrain as jc
from jconstrain import formulations
from jconstrain._solvers.alm import AugmentedLagrangian

SMOOTH = HS_PROBLEMS + [DICT_PROBLEM]

# jc.solve jitted with the solver as an argument: hyperparameters given as arrays are traced,
# so solves that differ only in them (e.g. rho0) share one compilation.
_jit_solve = eqx.filter_jit(jc.solve)


@functools.lru_cache(maxsize=None)
def _solution(name: str) -> jc.Solution:
    """The default ALM's solution of one of SMOOTH, computed once per test session."""
    tp = next(tp for tp in SMOOTH if tp.name == name)
    return jax.jit(lambda x0: jc.solve(tp.problem, x0, AugmentedLagrangian(), tp.args))(tp.x0)


def _ineq_values(tp, x):
    if tp.problem.ineq is None:
        return np.zeros((0,))
    return np.asarray(jax.flatten_util.ravel_pytree(tp.problem.ineq(x, tp.args))[0])


@pytest.mark.parametrize("tp", SMOOTH, ids=lambda tp: tp.name)
def test_reaches_known_optimum(tp):
    sol = _solution(tp.name)
    # CONVERGED, |f - f*| <= 1e-5 max(1, |f*|), violation <= 1e-6, ν >= 0, KKT residual.
    check_solution(tp, sol)
    # Complementarity: ν_i c_i = 0 for the general inequalities (|c_i| <= 1e-6 where ν_i > 0).
    nu = np.asarray(jax.flatten_util.ravel_pytree(sol.multipliers.ineq)[0]) if tp.has_ineq else np.zeros((0,))
    nu_scale = max(1.0, float(np.max(nu, initial=0.0)))
    assert np.max(np.abs(nu * _ineq_values(tp, sol.x)), initial=0.0) <= 1e-6 * nu_scale
    assert float(sol.stats.violation) <= 1e-6
    assert float(sol.stats.stationarity) <= 1e-6
    assert 1 <= int(sol.stats.iterations) <= AugmentedLagrangian().max_steps
    assert int(sol.stats.inner_iterations) >= int(sol.stats.iterations)
    assert int(sol.stats.evaluations) > int(sol.stats.inner_iterations)


def test_multiplier_signs_and_values_hs35():
    """HS35: x1 + x2 + 2 x3 <= 3 active with ν = 2/9 (from ∇f + ν ∇c = 0); x >= 0 inactive."""
    sol = _solution(HS35.name)
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    np.testing.assert_allclose(float(sol.multipliers.ineq), 2.0 / 9.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(sol.multipliers.lower), 0.0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(sol.multipliers.upper), 0.0, atol=0.0)  # no upper bounds


def test_multiplier_signs_active_bound_hs71():
    """HS71: x1 = 1 at its lower bound: the bound multiplier is positive, the upper ones 0."""
    sol = _solution(HS71.name)
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    lower, upper = np.asarray(sol.multipliers.lower), np.asarray(sol.multipliers.upper)
    assert lower[0] > 0.1 and np.all(lower >= 0) and np.all(upper >= 0)
    np.testing.assert_allclose(lower[1:], 0.0, atol=1e-8)
    np.testing.assert_allclose(upper, 0.0, atol=1e-8)
    assert float(sol.multipliers.ineq) > 0.1  # x1 x2 x3 x4 >= 25 active
    assert np.max(np.abs(kkt_residual(HS71.problem, sol))) <= 1e-5


# --- ρ -> 0: no NaN ---------------------------------------------------------------------


# min (x1 - 2)^2 + (x2 - 1)^2  s.t.  x1^2 - x2 <= 0,  x1 + x2 <= 2,  x2 >= -10 (x1 unbounded).
# x* = (1, 1), ν* = (2/3, 2/3).
CONVEX = jc.Problem(
    objective=lambda x, a: (x[0] - 2.0) ** 2 + (x[1] - 1.0) ** 2,
    ineq=lambda x, a: jnp.stack([x[0] ** 2 - x[1], x[0] + x[1] - 2.0]),
    bounds=(jnp.array([-jnp.inf, -10.0]), jnp.inf),
)


@pytest.mark.parametrize("rho0", [0.0, 1e-12, 1e-300])
def test_tiny_rho0_no_nan(rho0):
    sol = _jit_solve(CONVEX, jnp.zeros(2), AugmentedLagrangian(rho0=jnp.asarray(rho0)))
    for leaf in jax.tree_util.tree_leaves((sol.x, sol.f, sol.multipliers, sol.stats)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    np.testing.assert_allclose(np.asarray(sol.x), [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(sol.multipliers.ineq), [2.0 / 3.0, 2.0 / 3.0], rtol=1e-5)


@pytest.mark.parametrize("rho0", [0.0, 1e-12])
def test_tiny_rho0_nonconvex_stays_finite(rho0):
    """HS71 at ρ ≈ 0: the first subproblems are unbounded below; nothing turns NaN."""
    sol = _jit_solve(HS71.problem, HS71.x0, AugmentedLagrangian(rho0=jnp.asarray(rho0)))
    for leaf in jax.tree_util.tree_leaves((sol.x, sol.f, sol.multipliers, sol.stats)):
        assert not np.any(np.isnan(np.asarray(leaf)))
    assert jc.Status(int(sol.status)) != jc.Status.NONFINITE


def test_formulation_terms_at_rho_zero():
    c_eq = jnp.array([0.3])
    c_ineq = jnp.array([-1.0, 0.5, 0.0, -jnp.inf])  # the last one absent (an infinite bound)
    lam = jnp.array([2.0])
    nu = jnp.array([0.0, 1.5, 0.7, 0.0])
    for rho in (0.0, 1e-300, 1e-12, 1.0):
        rho = jnp.asarray(rho)
        value, grads = jax.value_and_grad(formulations.augmented_lagrangian_terms, argnums=(0, 1))(
            c_eq, c_ineq, lam, nu, rho
        )
        assert np.isfinite(float(value))
        for g in grads:
            assert np.all(np.isfinite(np.asarray(g)))
        # ∂/∂c_I = max(0, ν + ρ c_I): the updated multiplier; 0 on the absent row.
        _, nu_new = formulations.augmented_lagrangian_multipliers(c_eq, c_ineq, lam, nu, rho)
        np.testing.assert_allclose(np.asarray(grads[1]), np.asarray(nu_new), rtol=1e-12)
        assert np.all(np.isfinite(np.asarray(nu_new))) and float(nu_new[3]) == 0.0
        v = formulations.complementarity_violation(c_ineq, nu, rho)
        assert np.all(np.isfinite(np.asarray(v)))
        # ν + ρ V = max(0, ν + ρ c) on the present rows.
        np.testing.assert_allclose(np.asarray(nu + rho * v)[:3], np.asarray(nu_new)[:3], rtol=1e-12, atol=1e-300)
    # At ρ = 0 the terms are the Lagrangian's.
    value = formulations.augmented_lagrangian_terms(c_eq, c_ineq[:3], lam, nu[:3], jnp.asarray(0.0))
    np.testing.assert_allclose(float(value), float(formulations.lagrangian_terms(c_eq, c_ineq[:3], lam, nu[:3])))
    # The ρ -> 0 limit of max(c, -ν/ρ): c where ν > 0, max(c, 0) where ν = 0.
    v0 = formulations.complementarity_violation(c_ineq[:3], nu[:3], jnp.asarray(0.0))
    np.testing.assert_allclose(np.asarray(v0), [0.0, 0.5, 0.0])


# --- dtype, statuses ---------------------------------------------------------------------


@pytest.mark.parametrize("tp", [HS35, HS71, DICT_PROBLEM], ids=lambda tp: tp.name)
def test_float32_stays_float32(tp):
    x0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), tp.x0)
    solver = AugmentedLagrangian(opt_tol=1e-4, viol_tol=1e-4)
    sol = jc.solve(tp.problem, x0, solver, tp.args)
    for leaf in jax.tree_util.tree_leaves((sol.x, sol.f, sol.multipliers, sol.stats.violation, sol.stats.stationarity)):
        assert leaf.dtype == jnp.float32
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    assert float(sol.stats.violation) <= 1e-4
    # f may undercut f* by about Σ ν_i c_i with violations up to 1e-4 (ν ~ 1 here).
    assert abs(float(sol.f) - tp.f_star) <= 1e-3 * max(1.0, abs(tp.f_star))


@pytest.mark.parametrize(
    "problem",
    [
        # x >= 1 and x <= 0.
        jc.Problem(lambda x, a: jnp.sum(x**2), ineq=lambda x, a: jnp.stack([1.0 - x[0], x[0]])),
        # x1 + x2 = 1 and x1 + x2 = -1.
        jc.Problem(lambda x, a: jnp.sum(x**2), eq=lambda x, a: jnp.stack([x[0] + x[1] - 1, x[0] + x[1] + 1])),
        # x1^2 + 1 <= 0.
        jc.Problem(lambda x, a: jnp.sum(x**2), ineq=lambda x, a: x[0] ** 2 + 1.0),
    ],
    ids=["ineq", "eq", "nonlinear"],
)
def test_infeasible(problem):
    sol = jc.solve(problem, jnp.array([3.0, 1.0]), AugmentedLagrangian())
    assert not bool(sol.success)
    assert jc.Status(int(sol.status)) == jc.Status.INFEASIBLE
    assert float(sol.stats.violation) >= 0.5 - 1e-6  # the least violation of each problem is >= 0.5


def test_unbounded():
    # min x1 - x2^2 s.t. x1 = 1: f -> -inf along the feasible line.
    problem = jc.Problem(lambda x, a: x[0] - x[1] ** 2, eq=lambda x, a: x[0] - 1.0)
    sol = jc.solve(problem, jnp.array([3.0, 1.0]), AugmentedLagrangian())
    assert jc.Status(int(sol.status)) == jc.Status.UNBOUNDED


def test_max_steps():
    sol = jc.solve(HS71.problem, HS71.x0, AugmentedLagrangian(), max_steps=2)
    assert jc.Status(int(sol.status)) == jc.Status.MAX_STEPS
    assert int(sol.stats.iterations) == 2


def test_inner_iterations_counted():
    sol = jc.solve(HS71.problem, HS71.x0, AugmentedLagrangian(inner_max_steps=3), max_steps=5)
    assert int(sol.stats.iterations) == 5
    assert 5 <= int(sol.stats.inner_iterations) <= 15


# --- composition: vmap, jit, warm start, verbose -------------------------------------------


def test_vmap_over_args():
    centres = jnp.array([[2.0, 0.0], [0.3, -0.4], [-1.0, 3.0], [0.0, 0.5]])
    problem = disc_projection_problem()
    solve = jax.jit(jax.vmap(lambda c: jc.solve(problem, jnp.zeros(2), AugmentedLagrangian(), c)))
    sol = solve(centres)
    x_star, f_star = disc_projection_solution(np.asarray(centres))
    assert np.all(np.asarray(sol.status) == jc.Status.CONVERGED)
    np.testing.assert_allclose(np.asarray(sol.x), x_star, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sol.f), f_star, atol=1e-6)
    # ν = ||c|| - 1 where the disc constraint is active (from 2(x - c) + 2 ν x = 0), else 0.
    norms = np.linalg.norm(np.asarray(centres), axis=1)
    np.testing.assert_allclose(np.asarray(sol.multipliers.ineq), np.maximum(norms - 1.0, 0.0), atol=1e-6)


def test_vmap_over_hyperparameters():
    sol = jax.vmap(lambda r: jc.solve(CONVEX, jnp.zeros(2), AugmentedLagrangian(rho0=r)))(jnp.array([0.1, 10.0, 1e3]))
    assert np.all(np.asarray(sol.status) == jc.Status.CONVERGED)
    np.testing.assert_allclose(np.asarray(sol.x), np.ones((3, 2)), atol=1e-6)


def test_warm_start():
    sol = _solution(HS71.name)
    again = jc.solve(HS71.problem, sol.x, AugmentedLagrangian(), warm_start=sol)
    assert jc.Status(int(again.status)) == jc.Status.CONVERGED
    assert int(again.stats.iterations) <= 2
    np.testing.assert_allclose(float(again.f), float(sol.f), rtol=1e-7)


def test_custom_optimizer():
    import optax

    sol = jc.solve(HS35.problem, HS35.x0, AugmentedLagrangian(optimizer=optax.lbfgs(memory_size=3)))
    check_solution(HS35, sol)


def test_verbose_under_jit(capfd):
    solve = jax.jit(lambda x0: jc.solve(HS35.problem, x0, AugmentedLagrangian(), verbose=True))
    sol = solve(HS35.x0)
    jax.effects_barrier()
    out = capfd.readouterr().out
    assert "AugmentedLagrangian" in out and "rho" in out
    rows = [line for line in out.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert len(rows) == int(sol.stats.iterations) + 1  # the start and one row per outer iteration
    assert "CONVERGED" in out


def test_equinox_module_x0():
    """x0 may be an equinox Module: only its inexact-array leaves are variables."""

    class Point(eqx.Module):
        x: jax.Array
        label: str = eqx.field(static=True)
        count: int = 3

    problem = jc.Problem(
        objective=lambda p, a: jnp.sum((p.x - 2.0) ** 2) * p.count,
        eq=lambda p, a: jnp.sum(p.x) - 1.0,
    )
    sol = jc.solve(problem, Point(jnp.zeros(2), "pt"), AugmentedLagrangian())
    assert jc.Status(int(sol.status)) == jc.Status.CONVERGED
    np.testing.assert_allclose(np.asarray(sol.x.x), [0.5, 0.5], atol=1e-6)
    assert sol.x.label == "pt" and sol.x.count == 3
    # ∇f + λ ∇c = 0: 6 (x - 2) + λ = 0 -> λ = 9.
    np.testing.assert_allclose(float(sol.multipliers.eq), 9.0, rtol=1e-6)
