"""jconstrain.formulations: the Lagrangian, penalty and augmented-Lagrangian terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jconstrain import formulations as fm


def _values(seed, me=3, mi=4):
    rng = np.random.default_rng(seed)
    c_eq = rng.normal(size=me)
    c_ineq = rng.normal(size=mi)
    lam = rng.normal(size=me)
    nu = np.abs(rng.normal(size=mi))
    nu[0] = 0.0  # an inactive multiplier
    return c_eq, c_ineq, lam, nu


def _textbook_al(c_eq, c_ineq, lam, nu, rho):
    """λ·c_E + ρ/2 ||c_E||² + 1/(2ρ) Σ (max(0, ν + ρ c_I)² - ν²), straight from the book."""
    eq = lam @ c_eq + 0.5 * rho * c_eq @ c_eq
    ineq = np.sum(np.maximum(0.0, nu + rho * c_ineq) ** 2 - nu**2) / (2.0 * rho)
    return eq + ineq


def test_lagrangian_terms():
    c_eq, c_ineq, lam, nu = _values(0)
    got = fm.lagrangian_terms(jnp.asarray(c_eq), jnp.asarray(c_ineq), jnp.asarray(lam), jnp.asarray(nu))
    np.testing.assert_allclose(got, lam @ c_eq + nu @ c_ineq, rtol=1e-13)


def test_quadratic_and_exact_penalty_terms():
    c_eq, c_ineq, _, _ = _values(1)
    rho = 7.5
    quad = fm.quadratic_penalty_terms(jnp.asarray(c_eq), jnp.asarray(c_ineq), rho)
    want = 0.5 * rho * (np.sum(c_eq**2) + np.sum(np.maximum(c_ineq, 0.0) ** 2))
    np.testing.assert_allclose(quad, want, rtol=1e-13)
    exact = fm.exact_penalty_terms(jnp.asarray(c_eq), jnp.asarray(c_ineq))
    np.testing.assert_allclose(exact, np.sum(np.abs(c_eq)) + np.sum(np.maximum(c_ineq, 0.0)), rtol=1e-13)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rho", [1e-3, 0.5, 1.0, 40.0])
def test_augmented_lagrangian_matches_textbook(seed, rho):
    c_eq, c_ineq, lam, nu = _values(seed)
    got = fm.augmented_lagrangian_terms(*map(jnp.asarray, (c_eq, c_ineq, lam, nu)), rho)
    np.testing.assert_allclose(got, _textbook_al(c_eq, c_ineq, lam, nu, rho), rtol=1e-10, atol=1e-12)


def test_augmented_lagrangian_at_rho_zero_is_the_lagrangian():
    """At ρ = 0 the terms are finite (λ·c_E + ν·c_I, with ν >= 0), and so is their gradient."""
    c_eq, c_ineq, lam, nu = map(jnp.asarray, _values(3))
    value = fm.augmented_lagrangian_terms(c_eq, c_ineq, lam, nu, 0.0)
    assert np.isfinite(value)
    np.testing.assert_allclose(value, fm.lagrangian_terms(c_eq, c_ineq, lam, nu), rtol=1e-13)
    grads = jax.grad(fm.augmented_lagrangian_terms, argnums=(0, 1, 2, 3, 4))(c_eq, c_ineq, lam, nu, 0.0)
    for g in grads:
        assert np.all(np.isfinite(g)), grads
    # And the limit ρ -> 0 is continuous.
    near = fm.augmented_lagrangian_terms(c_eq, c_ineq, lam, nu, 1e-9)
    np.testing.assert_allclose(near, value, rtol=1e-6)


@pytest.mark.parametrize("rho", [0.0, 0.3, 10.0])
def test_gradient_of_augmented_lagrangian_is_the_multiplier_update(rho):
    """∂/∂c_E L_ρ = λ + ρ c_E and ∂/∂c_I L_ρ = max(0, ν + ρ c_I): the first-order update."""
    c_eq, c_ineq, lam, nu = map(jnp.asarray, _values(4))
    g_eq, g_ineq = jax.grad(fm.augmented_lagrangian_terms, argnums=(0, 1))(c_eq, c_ineq, lam, nu, rho)
    new_lam, new_nu = fm.augmented_lagrangian_multipliers(c_eq, c_ineq, lam, nu, rho)
    np.testing.assert_allclose(g_eq, new_lam, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g_ineq, new_nu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(new_lam, np.asarray(lam) + rho * np.asarray(c_eq), rtol=1e-13)
    np.testing.assert_allclose(new_nu, np.maximum(0.0, np.asarray(nu) + rho * np.asarray(c_ineq)), rtol=1e-13)
    assert np.all(np.asarray(new_nu) >= 0)


def test_augmented_lagrangian_is_continuous_at_the_kink():
    """Both pieces of the inequality term agree where ν + ρ c = 0."""
    nu, rho = 0.8, 4.0
    c = -nu / rho
    empty = jnp.zeros((0,))
    at = lambda c: fm.augmented_lagrangian_terms(empty, jnp.array([c]), empty, jnp.array([nu]), rho)
    np.testing.assert_allclose(at(c - 1e-9), at(c + 1e-9), atol=1e-8)
    np.testing.assert_allclose(at(c), -(nu**2) / (2 * rho), rtol=1e-13)


def test_empty_constraints():
    empty = jnp.zeros((0,))
    assert float(fm.augmented_lagrangian_terms(empty, empty, empty, empty, 1.0)) == 0.0
    assert float(fm.quadratic_penalty_terms(empty, empty, 1.0)) == 0.0
    assert float(fm.exact_penalty_terms(empty, empty)) == 0.0
    assert float(fm.lagrangian_terms(empty, empty, empty, empty)) == 0.0


def test_float32_preserved():
    c = jnp.ones(2, jnp.float32)
    out = fm.augmented_lagrangian_terms(c, c, c, c, jnp.float32(2.0))
    assert out.dtype == jnp.float32
    assert fm.quadratic_penalty_terms(c, c, jnp.float32(2.0)).dtype == jnp.float32


@pytest.mark.parametrize("rho", [0.0, 2.0])
def test_absent_inequalities_are_inactive(rho):
    """c_I = -inf (an infinite bound from inequalities_with_bounds) behaves as no constraint."""
    c_eq, c_ineq, lam, nu = map(jnp.asarray, _values(5))
    c_with = jnp.concatenate([c_ineq, jnp.array([-jnp.inf, -jnp.inf])])
    nu_with = jnp.concatenate([nu, jnp.zeros(2)])
    value = fm.augmented_lagrangian_terms(c_eq, c_with, lam, nu_with, rho)
    np.testing.assert_allclose(value, fm.augmented_lagrangian_terms(c_eq, c_ineq, lam, nu, rho), rtol=1e-13)
    g_eq, g_ineq = jax.grad(fm.augmented_lagrangian_terms, argnums=(0, 1))(c_eq, c_with, lam, nu_with, rho)
    assert np.all(np.isfinite(g_eq)) and np.all(np.isfinite(g_ineq))
    np.testing.assert_array_equal(g_ineq[-2:], 0.0)
    _, new_nu = fm.augmented_lagrangian_multipliers(c_eq, c_with, lam, nu_with, rho)
    np.testing.assert_array_equal(new_nu[-2:], 0.0)
    np.testing.assert_allclose(new_nu[:-2], np.maximum(0.0, np.asarray(nu) + rho * np.asarray(c_ineq)), rtol=1e-13)
    # The quadratic penalty ignores them too (max(-inf, 0) = 0), with a finite gradient.
    q = jax.grad(fm.quadratic_penalty_terms, argnums=1)(c_eq, c_with, 3.0)
    assert np.all(np.isfinite(q)) and np.all(q[-2:] == 0.0)


def test_complementarity_violation():
    """V = max(c_I, -ν/ρ); ν + ρ V is the multiplier update; V = 0 at a KKT pair."""
    c = jnp.array([-1.0, 0.5, -0.1, 0.0, -jnp.inf])
    nu = jnp.array([0.0, 1.0, 2.0, 3.0, 0.0])
    rho = 10.0
    v = fm.complementarity_violation(c, nu, rho)
    np.testing.assert_allclose(v, [-0.0, 0.5, -0.1, 0.0, 0.0], atol=0)
    _, new_nu = fm.augmented_lagrangian_multipliers(jnp.zeros(0), c, jnp.zeros(0), nu, rho)
    np.testing.assert_allclose(nu + rho * v, new_nu, rtol=1e-13)
    # ρ = 0: the limit ρ -> 0+, without division by zero.
    v0 = fm.complementarity_violation(c, nu, 0.0)
    np.testing.assert_allclose(v0, [0.0, 0.5, -0.1, 0.0, 0.0])
