"""jc.SQP's step along the direction d: a weak Wolfe line search on the exact penalty
φ_μ = μ f + v, with a second-order correction tried first.

The search (Lewis-Overton weak Wolfe, `jconstrain._linesearch`) uses the predicted
decrease Δ = -dᵀH⁻¹d < 0, a rounding allowance of a few ulps of φ, and two safeguards:
within t <= 1 the violation may grow to at most 100·max(1, v) (as IPOPT's θ_max); past
t = 1 it may not exceed min(v, v(x + d)) (the QP step solves the linearised
constraints; going further only overshoots them). Expansion stops at a step of
1e3·max(1, ||x||_∞) (a merit still falling there looks unbounded below along d) and
where the box does. Trial points are clip(x + t d) to the bounds: iterates keep them.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jconstrain._linesearch import SearchStatus, weak_wolfe
from jconstrain._misc import inf_norm
from jconstrain._problem import FlatProblem
from jconstrain._solvers import sqp_hessian as hessian
from jconstrain._solvers.sqp_hessian import InverseHessian
from jconstrain._solvers.sqp_model import Model, Rows, bound_rows, general_constraints, merit_values, violations


class Move(eqx.Module):
    """Where the search went: the new point z, the step t along d, whether it `moved`
    (an accepted step, possibly the correction's), φ at the unit step, and the merit
    evaluations spent."""

    z: Float[Array, " n"]
    t: Float[Array, ""]
    moved: Bool[Array, ""]
    unit_phi: Float[Array, ""]
    evaluations: Int[Array, ""]


def path(problem: FlatProblem, z: Array, d: Array, t: Array) -> tuple[Array, Array]:
    """The trial point clip(z + t d) (iterates stay inside the bounds) and the direction
    of the path there (d with the clipped components zeroed)."""
    trial = z + t * d
    if not problem.has_bounds:
        return trial, d
    inside = (trial >= problem.lower) & (trial <= problem.upper)
    return jnp.clip(trial, problem.lower, problem.upper), jnp.where(inside, d, 0.0)


def expansion_limit(problem: FlatProblem, z: Array, d: Array) -> Array:
    """The largest t the search may expand to: 1e3·max(1, ||z||_∞)/||d||_∞, and no
    farther than the box (at least 1)."""
    dtype = z.dtype
    d_norm = inf_norm(d)
    z_norm = jnp.maximum(1.0, inf_norm(z))
    t_max = jnp.maximum(1.0, 1e3 * z_norm / jnp.maximum(d_norm, jnp.finfo(dtype).tiny))
    if problem.has_bounds:
        # The QP keeps z + d inside the bounds; expanding stops where the box does.
        room = jnp.where(d > 0, (problem.upper - z) / jnp.where(d > 0, d, 1.0), jnp.inf)
        room = jnp.minimum(room, jnp.where(d < 0, (problem.lower - z) / jnp.where(d < 0, d, -1.0), jnp.inf))
        # Components already at their bound (room 0) stay clipped along the whole path
        # (rounding leaves tiny d there): they do not stop the expansion.
        room = jnp.where(room > 0, room, jnp.inf)
        t_max = jnp.minimum(t_max, jnp.maximum(1.0, jnp.min(room, initial=jnp.inf)))
    return t_max


def merit_along(
    problem: FlatProblem, args: Any, rows: Rows, model: Model, d: Array, mu: Array, scale_f: Array, scale_c: Array,
    caps: tuple[Array, Array],
):
    """t ↦ (φ_μ(path(t)), dφ/dt) by one `jax.jvp` of [f; c_general] along the path;
    φ = inf where the violation exceeds caps[0] (t <= 1) or caps[1] (t > 1)."""
    dtype = model.z.dtype

    def phi_and_slope(t):
        z, direction = path(problem, model.z, d, t)
        general = lambda z: jnp.concatenate([problem.objective(z, args)[None], general_constraints(problem, z, args)])
        values, slopes = jax.jvp(general, (z,), (direction,))
        c_b, J_b = bound_rows(problem, z)
        c = jnp.concatenate([values[1:], c_b]) * scale_c
        dc = jnp.concatenate([slopes[1:], J_b @ direction]) * scale_c
        f, df = values[0] * scale_f, slopes[0] * scale_f
        weights = jnp.where(rows.is_eq, jnp.sign(c), (c > 0).astype(dtype)) * rows.on
        v_t, _ = violations(c, rows)
        # Safeguards: an exact penalty with too large μ can look unbounded below along
        # d (e.g. cubic objectives).
        cap = jnp.where(t <= 1.0, caps[0], caps[1])
        phi_t = jnp.where(v_t <= cap, mu * f + v_t, jnp.inf)
        return phi_t, mu * df + jnp.dot(weights, dc)

    return phi_and_slope


def search(
    problem: FlatProblem,
    args: Any,
    rows: Rows,
    model: Model,
    H: InverseHessian,
    d: Array,
    y: Array,
    mu: Array,
    v: Array,
    decrease: Array,
    scale_f: Array,
    scale_c: Array,
    active: Bool[Array, ""],
    *,
    c1: Array,
    c2: Array,
    viol_tol: Array,
) -> Move:
    """The step from model.z along d: the second-order corrected unit step if it passes
    the Armijo test, else the weak Wolfe search (nothing when `active` is False or d is
    not a descent direction)."""
    dtype = model.z.dtype
    phi0 = mu * model.f + v
    violation_cap = 100.0 * jnp.maximum(1.0, v)
    merit = lambda z: merit_values(problem, z, args, rows, mu, scale_f, scale_c)
    z_unit = path(problem, model.z, d, 1.0)[0]
    unit = merit(z_unit)
    # Expanding past t = 1 must not raise the violation above v nor above its value
    # at the unit step: the QP step solves the linearised constraints, and going
    # further only overshoots them (e.g. a linear equality met exactly at t = 1).
    expansion_cap = jnp.minimum(v, unit[1]) + 1e-2 * viol_tol
    phi_and_slope = merit_along(problem, args, rows, model, d, mu, scale_f, scale_c, (violation_cap, expansion_cap))
    # Rounding allowance: a few ulps of the merit value and its parts.
    noise = 10 * jnp.finfo(dtype).eps * (mu * jnp.abs(model.f) + v)
    t_max = expansion_limit(problem, model.z, d)
    soc_ok, z_soc = second_order_correction(
        merit, z_unit, unit, model, rows, H, y, phi0 + c1 * decrease + noise, violation_cap,
        enabled=active & (decrease < 0), clip=lambda z: jnp.clip(z, problem.lower, problem.upper),
    )
    result = weak_wolfe(
        phi_and_slope, phi0, decrease, c1=c1, c2=c2, enabled=active & (decrease < 0) & ~soc_ok, noise=noise,
        t_max=t_max,
    )
    moved = soc_ok | (result.status == SearchStatus.WOLFE) | (result.status == SearchStatus.ARMIJO) | (
        result.status == SearchStatus.UNBOUNDED
    )
    t = jnp.where(soc_ok, 1.0, jnp.where(moved, result.t, 0.0))
    z_new = jnp.where(soc_ok, z_soc, path(problem, model.z, d, t)[0])
    return Move(z=z_new, t=t, moved=moved, unit_phi=unit[0], evaluations=result.evaluations)


def second_order_correction(
    merit, z_full, unit, model: Model, rows: Rows, H: InverseHessian, y, phi_target, cap, *, enabled, clip
):
    """The full step with a second-order correction, against the Maratos effect.

    Near a solution the unit step z + d can raise the l1 violation by O(||d||²) (the
    constraints' curvature) more than it lowers μf, and the merit line search then
    cuts good steps short. If z + d fails the Armijo test, the correction

        d_c = -H J_Wᵀ (J_W H J_Wᵀ)⁻¹ c_W(z + d)

    (the least H⁻¹-norm step back onto the linearised working set W: equalities,
    inequalities with QP dual y > 0 or violated at z + d) is tried, and
    z + d + d_c is taken when it passes the Armijo test (Nocedal & Wright, §18.3).
    `unit` is merit(z_full). Returns (accepted, z + d + d_c).
    """

    def corrected():
        phi_full, v_full, c_full = unit
        full_ok = jnp.isfinite(phi_full) & (phi_full <= phi_target) & (v_full <= cap)
        working = rows.on & ~rows.is_bound & (rows.is_eq | (y > 0) | (c_full > 0))
        J_w = model.J * working[:, None]
        HJt = hessian.apply(H, J_w.T)
        K = J_w @ HJt
        scale = jnp.maximum(jnp.max(jnp.abs(jnp.diag(K)), initial=0.0), 1.0)
        K = K + jnp.diag(jnp.where(working, 1e-12 * scale, 1.0))
        z_c = clip(z_full - HJt @ jnp.linalg.solve(K, jnp.where(working, c_full, 0.0)))
        phi_c, v_c, _ = merit(z_c)
        ok = ~full_ok & jnp.isfinite(phi_c) & (phi_c <= phi_target) & (v_c <= cap) & jnp.all(jnp.isfinite(z_c))
        return ok, jnp.where(ok, z_c, z_full)

    return jax.lax.cond(enabled, corrected, lambda: (jnp.asarray(False), z_full))
