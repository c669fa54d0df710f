"""jc.SQP's stationarity measure by gradient sampling.

Objective gradients at recent iterates within `evaldist` of x (the `Samples` ring
buffer) and the constraint gradients at x enter the QP

    min ||G_f w + Jᵀλ||²_2   s.t. Σ w = 1, w >= 0, λ_E ∈ [-1, 1]/μ, λ_I ∈ [0, 1]/μ,
    λ_B >= 0 (active rows only; the penalty's dual box in units of μ),

and the measure is ||G_f w + Jᵀλ||_∞ / max(1, ||g||_∞) at the QP's (w, λ) made feasible
(w renormalised to Σ w = 1, λ clipped to its box): the relative norm of a Lagrangian
gradient built from the Clarke-subdifferential samples. Any feasible (w, λ) bounds the
true measure from above, so an inexact QP can only make it pessimistic.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jconstrain import qp
from jconstrain._misc import inf_norm
from jconstrain._solvers.base import dtype_tol, rounding_level
from jconstrain._solvers.sqp_model import Model, Rows

STATIONARITY_QP_STEPS = 50  # interior-point steps of the stationarity QP (finished members: 0)


class Samples(eqx.Module):
    """A ring buffer of the last L iterates z and their objective gradients g; `valid`
    marks the slots filled so far."""

    z: Float[Array, "L n"]
    g: Float[Array, "L n"]
    valid: Bool[Array, " L"]


def first_samples(z: Array, g: Array, L: int) -> Samples:
    """The buffer holding only (z, g), in slot 0."""
    return Samples(
        z=jnp.zeros((L, z.shape[0]), z.dtype).at[0].set(z),
        g=jnp.zeros((L, z.shape[0]), z.dtype).at[0].set(g),
        valid=jnp.zeros((L,), bool).at[0].set(True),
    )


def add_sample(samples: Samples, z: Array, g: Array, iteration: Int[Array, ""], keep: Bool[Array, ""]) -> Samples:
    """(z, g) written into slot (iteration + 1) mod L where `keep`, else the buffer as is."""
    slot = (iteration + 1) % samples.valid.shape[0]
    return Samples(
        z=jnp.where(keep, samples.z.at[slot].set(z), samples.z),
        g=jnp.where(keep, samples.g.at[slot].set(g), samples.g),
        valid=jnp.where(keep, samples.valid.at[slot].set(True), samples.valid),
    )


def radius(z: Array, evaldist: Array) -> Array:
    """The sampling radius evaldist·max(1, ||z||_∞), at least 10 eps of the dtype."""
    scale = jnp.maximum(1.0, inf_norm(z))
    return dtype_tol(evaldist, z.dtype, 10.0) * scale


def used_rows(model: Model, rows: Rows, viol_tol: Array) -> Array:
    """The rows whose gradients enter the measure: equalities, and inequalities within
    viol_tol/10 of the boundary or within the rounding error of the computed value c_i
    (`rounding_level` with terms ||∇c_i||_∞ ||x||_∞), below which c_i < 0 is noise.

    (The whole viol_tol would let a constraint just short of its bound certify a point
    off the optimum's kink; without the rounding term, an active 25 - Π w whose float32
    value is slightly negative would be left out and the measure could never reach
    opt_tol.)
    """
    dtype = model.f.dtype
    terms = jnp.max(jnp.abs(model.J), axis=1) * inf_norm(model.z)
    active = jnp.maximum(0.1 * dtype_tol(viol_tol, dtype), rounding_level(model.c, terms))
    return rows.on & (rows.is_eq | (model.c >= -active))


def measure(
    model: Model,
    rows: Rows,
    mu: Array,
    samples: Samples,
    *,
    evaldist: Array,
    viol_tol: Array,
    max_iter: Array | int = STATIONARITY_QP_STEPS,
):
    """The gradient-sampling stationarity measure and the multipliers λ = u/μ it implies
    (of the scaled constraints).

    Samples farther than the radius are replaced by the current gradient, and
    constraints that are absent or inactive (c < -viol_tol/10) get a zero column, so the
    QP has the same shape every iteration and no degenerate [0, 0] boxes.
    """
    dtype = model.f.dtype
    L = samples.g.shape[0]
    m = model.c.shape[0]
    r = radius(model.z, evaldist)
    near = samples.valid & (jnp.max(jnp.abs(samples.z - model.z), axis=1) <= r)
    G = jnp.where(near[:, None], samples.g, model.g[None, :])
    used = used_rows(model, rows, viol_tol)
    A = jnp.concatenate([G.T, (model.J * used[:, None]).T], axis=1)  # n x (L + m)
    # The QP in units of μ (Σ w = 1, u = λ ∈ μ⁻¹·box): its accuracy then does not
    # depend on how small μ has become.
    tiny = jnp.finfo(dtype).tiny
    lo_u, hi_u = rows.dual_box(dtype)
    inv_mu = 1.0 / jnp.maximum(mu, tiny)
    lower = jnp.concatenate([jnp.zeros((L,), dtype), lo_u * inv_mu])
    # Unused rows (zero columns) get the box [0, 1]: with [0, ∞) (bounds) their free,
    # flat direction let the interior point drift off to Inf in float32.
    upper = jnp.concatenate([jnp.full((L,), jnp.inf, dtype), jnp.where(used, hi_u * inv_mu, 1.0)])
    A_eq = jnp.concatenate([jnp.ones((1, L), dtype), jnp.zeros((1, m), dtype)], axis=1)
    zero = jnp.zeros((L + m,), dtype)
    sol = qp.solve(A.T @ A, zero, A_eq=A_eq, b_eq=jnp.ones((1,), dtype), lower=lower, upper=upper, max_iter=max_iter)
    x = jnp.clip(sol.x, lower, upper)
    # The measure is an upper bound of the true one only at a feasible (w, λ): make
    # Σ w = 1 exactly (an inexact QP, e.g. with the huge dual box of a tiny μ, can
    # return w ≈ 0 and so a spurious measure of 0).
    w = x[:L]
    total = jnp.sum(w)
    w = w / jnp.where(total > 0, total, 1.0)
    lam_all = x[L:] * used
    combination = G.T @ w + model.J.T @ lam_all
    scale = jnp.maximum(1.0, inf_norm(model.g))
    measure = inf_norm(combination) / scale
    # Any feasible (w, λ) bounds the measure from above, so the QP's last finite iterate
    # serves even when its status is not SOLVED (in float32 the interior point can break
    # down near a degenerate optimum; the iterate it returns is the last finite one).
    # Fall back to the single-sample measure (no multipliers) when there is none.
    single = inf_norm(model.g) / scale
    ok = (total > 0) & jnp.isfinite(measure)
    measure = jnp.where(ok, jnp.minimum(measure, single), single)
    measure = jnp.where(mu > 0, measure, jnp.inf)
    lam = jnp.where(ok & (measure < single), lam_all, 0.0)
    return measure, lam
