"""The constrained-optimisation formulations, written once.

For constraint values c_E (equalities, == 0) and c_I (inequalities, <= 0):

- Lagrangian:              L(x, λ, ν) = f + λ·c_E + ν·c_I                      (ν >= 0)
- quadratic penalty:       P_ρ(x)     = f + ρ/2 (||c_E||² + ||max(c_I, 0)||²)
- exact (l1) penalty:      φ_μ(x)     = μ f + ||c_E||_1 + ||max(c_I, 0)||_1
- augmented Lagrangian:    L_ρ(x,λ,ν) = f + λ·c_E + ρ/2 ||c_E||²
                                        + 1/(2ρ) Σ (max(0, ν + ρ c_I)² - ν²)
  with its multiplier update λ + ρ c_E, max(0, ν + ρ c_I) and its inequality residual
  V = max(c_I, -ν/ρ) (feasibility and complementarity; ∂L_ρ/∂ν).

Each function returns the constraint part only (add f yourself), so that solvers and
the stepwise training API share one implementation. The augmented-Lagrangian functions
stay finite as ρ -> 0 and accept c_I = -inf (an absent constraint, e.g. an infinite bound).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


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


def _split_absent(c_ineq: Float[Array, " mi"]) -> tuple[Bool[Array, " mi"], Float[Array, " mi"]]:
    """(absent, c): rows equal to -inf are absent constraints (an infinite bound, as
    `problem.inequalities_with_bounds` writes them); c has 0 there, so that no 0·inf
    appears in a value or a gradient."""
    absent = jnp.isneginf(c_ineq)
    return absent, jnp.where(absent, jnp.zeros_like(c_ineq), c_ineq)


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
    so it stays finite (and equals the Lagrangian term ν c) as ρ -> 0. Entries
    c_I = -inf (absent constraints) are inactive: they contribute -ν²/(2ρ) (0 for ν = 0)
    and nothing to the gradient.
    """
    eq_part = jnp.dot(lam, c_eq) + 0.5 * rho * jnp.sum(c_eq**2)
    absent, c = _split_absent(c_ineq)
    active = ~absent & (nu + rho * c >= 0)
    safe_rho = jnp.where(rho > 0, rho, 1.0)
    inactive_value = jnp.where(rho > 0, -(nu**2) / (2 * safe_rho), 0.0)
    ineq_part = jnp.where(active, nu * c + 0.5 * rho * c**2, inactive_value)
    return eq_part + jnp.sum(ineq_part)


def augmented_lagrangian_multipliers(
    c_eq: Float[Array, " me"],
    c_ineq: Float[Array, " mi"],
    lam: Float[Array, " me"],
    nu: Float[Array, " mi"],
    rho: Float[Array, ""],
) -> tuple[Float[Array, " me"], Float[Array, " mi"]]:
    """The first-order multiplier update: λ + ρ c_E and max(0, ν + ρ c_I).

    Absent inequalities (c_I = -inf) get ν = 0, also when ρ = 0.
    """
    absent, c = _split_absent(c_ineq)
    nu_new = jnp.where(absent, jnp.zeros_like(nu), jnp.maximum(nu + rho * c, 0))
    return lam + rho * c_eq, nu_new


def complementarity_violation(
    c_ineq: Float[Array, " *mi"], nu: Float[Array, " *mi"], rho: Float[Array, ""]
) -> Float[Array, " *mi"]:
    """V = max(c_I, -ν/ρ), elementwise: the inequality residual of the augmented Lagrangian.

    V = 0 exactly when c_I <= 0, ν >= 0 and ν c_I = 0 up to the scale ρ (feasible and
    complementary); ν + ρ V = max(0, ν + ρ c_I) is the multiplier update, so V is also
    the gradient of L_ρ in ν. At ρ = 0 it takes its limit as ρ -> 0+: c_I where ν > 0,
    max(c_I, 0) where ν = 0 (no division by zero). Absent constraints (c_I = -inf)
    with ν = 0 give 0.
    """
    safe_rho = jnp.where(rho > 0, rho, 1.0)
    floor = jnp.where(rho > 0, -nu / safe_rho, jnp.where(nu > 0, -jnp.inf, 0.0))
    return jnp.maximum(c_ineq, floor.astype(c_ineq.dtype))
