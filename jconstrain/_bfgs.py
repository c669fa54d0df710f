"""Inverse BFGS updates with Powell-style damping, for smooth and nonsmooth functions.

H approximates the inverse Hessian. With s = x+ - x and y = g+ - g, the inverse update is

    H+ = (I - ρ s yᵀ) H (I - ρ y sᵀ) + ρ s sᵀ,      ρ = 1 / (sᵀy),

which keeps H positive definite iff sᵀy > 0. Damping (the inverse form of Powell's rule,
acting on s instead of y): when sᵀy < δ yᵀHy, s is replaced by

    s̃ = θ s + (1 - θ) H y,      θ = (1 - δ) yᵀHy / (yᵀHy - sᵀy),

which gives s̃ᵀy = δ yᵀHy > 0. Updates with s̃ᵀy <= 0 or non-finite results are skipped.
Updates whose result fails a Cholesky factorisation (rounding) are skipped too.
At the first update H is rescaled to (sᵀy / yᵀy) I before updating (Nocedal-Wright 6.20).

That rule never acts where y ≈ 0 (f and c linear along s): yᵀHy is then ≈ 0 too, and
the term s sᵀ / sᵀy can blow H up by many orders of magnitude in one update. Powell's
own rule (the direct form, Nocedal-Wright Procedure 18.2) bounds that: with B = H⁻¹,
when sᵀy < η sᵀBs, y is replaced by

    ỹ = θ y + (1 - θ) B s,      θ = (1 - η) sᵀBs / (sᵀBs - sᵀy),

so that sᵀỹ = η sᵀBs: the curvature along s falls at most to the fraction η of the
model's, and H grows along s by at most 1/η per update. `curvature_damping` = η (0
turns it off; B s is solved from a Cholesky factor of H). It runs before the inverse
rule, which then sees sᵀỹ > 0.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


class BFGSInfo(eqx.Module):
    """Whether an update was applied, and whether damping changed s."""

    applied: Bool[Array, ""]
    damped: Bool[Array, ""]


def initial_scale(s: Float[Array, " n"], y: Float[Array, " n"]) -> tuple[Float[Array, ""], Bool[Array, ""]]:
    """γ = sᵀy / yᵀy, the scale of the first inverse Hessian γI, and whether it is valid."""
    sy, yy = jnp.dot(s, y), jnp.dot(y, y)
    ok = (sy > 0) & (yy > 0)
    return sy / jnp.where(ok, yy, 1.0), ok


def damp(
    s: Float[Array, " n"], y: Float[Array, " n"], Hy: Float[Array, " n"], damping: float | Float[Array, ""]
) -> tuple[Float[Array, " n"], Bool[Array, ""]]:
    """Powell's damping in inverse form: s̃ = θ s + (1 - θ) H y when sᵀy < δ yᵀHy.

    Returns (s̃, damped); s̃ᵀy = δ yᵀHy > 0 when damped, else s̃ = s.
    """
    sy, yHy = jnp.dot(s, y), jnp.dot(y, Hy)
    damped = sy < damping * yHy
    theta = jnp.where(damped, (1 - damping) * yHy / jnp.where(damped, yHy - sy, 1.0), 1.0)
    return theta * s + (1 - theta) * Hy, damped


def curvature_damp(
    s: Float[Array, " n"], y: Float[Array, " n"], Bs: Float[Array, " n"], damping: float | Float[Array, ""]
) -> tuple[Float[Array, " n"], Bool[Array, ""]]:
    """Powell's damping in direct form: ỹ = θ y + (1 - θ) B s when sᵀy < η sᵀBs.

    Returns (ỹ, damped); sᵀỹ = η sᵀBs when damped, else ỹ = y. A non-finite B s (H
    not positive definite to rounding) leaves y as it is.
    """
    sy, sBs = jnp.dot(s, y), jnp.dot(s, Bs)
    damped = jnp.isfinite(sBs) & (sBs > 0) & (sy < damping * sBs)
    theta = jnp.where(damped, (1 - damping) * sBs / jnp.where(damped, sBs - sy, 1.0), 1.0)
    return jnp.where(damped, theta * y + (1 - theta) * Bs, y), damped


def inverse_update(
    H: Float[Array, "n n"],
    s: Float[Array, " n"],
    y: Float[Array, " n"],
    damping: float | Float[Array, ""] = 1e-4,
    first: Bool[Array, ""] | bool = False,
    curvature_damping: float | Float[Array, ""] = 0.0,
) -> tuple[Float[Array, "n n"], BFGSInfo]:
    """The damped inverse BFGS update of H with the pair (s, y) (see the module docstring)."""
    gamma, scale_ok = initial_scale(s, y)
    H = jnp.where(first & scale_ok, gamma * jnp.eye(H.shape[0], dtype=H.dtype), H)
    curvature_damped = jnp.asarray(False)
    if not (isinstance(curvature_damping, (int, float)) and curvature_damping == 0):
        Bs = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(H), True), s)
        y, curvature_damped = curvature_damp(s, y, Bs, curvature_damping)
    Hy = H @ y
    yHy = jnp.dot(y, Hy)
    s_t, damped = damp(s, y, Hy, damping)
    sy_t = jnp.dot(s_t, y)
    rho = 1.0 / jnp.where(sy_t > 0, sy_t, 1.0)
    Hy_outer = jnp.outer(Hy, s_t)
    H_new = H - rho * (Hy_outer + Hy_outer.T) + (rho**2 * yHy + rho) * jnp.outer(s_t, s_t)
    H_new = 0.5 * (H_new + H_new.T)
    # Rounding can break positive definiteness when s̃ᵀy is tiny: check with a Cholesky.
    positive_definite = jnp.all(jnp.isfinite(jnp.linalg.cholesky(H_new)))
    ok = (sy_t > 0) & jnp.all(jnp.isfinite(H_new)) & positive_definite
    return jnp.where(ok, H_new, H), BFGSInfo(applied=ok, damped=(damped | curvature_damped) & ok)
