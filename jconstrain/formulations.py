"""The constrained-optimisation formulations, written once.

For constraint values c_E (equalities, == 0) and c_I (inequalities, <= 0):

- Lagrangian:              L(x, λ, ν) = f + λ·c_E + ν·c_I                      (ν >= 0)
- quadratic penalty:       P_ρ(x)     = f + ρ/2 (||c_E||² + ||max(c_I, 0)||²)
- exact (l1) penalty:      φ_μ(x)     = μ f + ||c_E||_1 + ||max(c_I, 0)||_1
- augmented Lagrangian:    L_ρ(x,λ,ν) = f + λ·c_E + ρ/2 ||c_E||²
                                        + 1/(2ρ) Σ (max(0, ν + ρ c_I)² - ν²)

Each function returns the constraint part only (add f yourself, or use the `*_value`
helpers), so that solvers and the stepwise training API share one implementation.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float


def lagrangian_terms(
    c_eq: Float[Array, " me"],
    c_ineq: Float[Array, " mi"],
    lam: Float[Array, " me"],
    nu: Float[Array, " mi"],
) -> Float[Array, ""]:
    """λ·c_E + ν·c_I."""
    return jnp.dot(lam, c_eq) + jnp.dot(nu, c_ineq)


def quadratic_penalty_terms(
    c_eq: Float[Array, " me"], c_ineq: Float[Array, " mi"], rho: Float[Array, ""]
) -> Float[Array, ""]:
    """ρ/2 (||c_E||² + ||max(c_I, 0)||²)."""
    return 0.5 * rho * (jnp.sum(c_eq**2) + jnp.sum(jnp.maximum(c_ineq, 0) ** 2))


def exact_penalty_terms(c_eq: Float[Array, " me"], c_ineq: Float[Array, " mi"]) -> Float[Array, ""]:
    """||c_E||_1 + ||max(c_I, 0)||_1, the l1 violation v(x)."""
    return jnp.sum(jnp.abs(c_eq)) + jnp.sum(jnp.maximum(c_ineq, 0))


def augmented_lagrangian_terms(
    c_eq: Float[Array, " me"],
    c_ineq: Float[Array, " mi"],
    lam: Float[Array, " me"],
    nu: Float[Array, " mi"],
    rho: Float[Array, ""],
) -> Float[Array, ""]:
    """λ·c_E + ρ/2 ||c_E||² + 1/(2ρ) Σ (max(0, ν + ρ c_I)² - ν²).

    The inequality part is evaluated piecewise, without dividing by ρ where ν + ρ c >= 0:
        ν c + ρ/2 c²     if ν + ρ c >= 0,
        -ν² / (2ρ)       otherwise,
    so it stays finite (and equals the Lagrangian term ν c) as ρ -> 0.
    """
    eq_part = jnp.dot(lam, c_eq) + 0.5 * rho * jnp.sum(c_eq**2)
    active = nu + rho * c_ineq >= 0
    safe_rho = jnp.where(rho > 0, rho, 1.0)
    inactive_value = jnp.where(rho > 0, -(nu**2) / (2 * safe_rho), 0.0)
    ineq_part = jnp.where(active, nu * c_ineq + 0.5 * rho * c_ineq**2, inactive_value)
    return eq_part + jnp.sum(ineq_part)


def augmented_lagrangian_multipliers(
    c_eq: Float[Array, " me"],
    c_ineq: Float[Array, " mi"],
    lam: Float[Array, " me"],
    nu: Float[Array, " mi"],
    rho: Float[Array, ""],
) -> tuple[Float[Array, " me"], Float[Array, " mi"]]:
    """The first-order multiplier update: λ + ρ c_E and max(0, ν + ρ c_I)."""
    return lam + rho * c_eq, jnp.maximum(nu + rho * c_ineq, 0)
