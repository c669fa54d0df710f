"""jc.SQP's search direction: the dual steering QP and the μ steering around it.

For penalty μ and inverse Hessian H the direction solves

    min_d  μ gᵀd + ½ dᵀH⁻¹d + ||c_E + J_E d||_1 + ||max(c_I + J_I d, 0)||_1
    s.t.   l <= x + d <= u   (the bound rows, linear hence exact: bounds are hard),

through its dual, a box-constrained QP in the multipliers y:

    min_y ½ yᵀ(J H Jᵀ)y + (μ J H g - c)ᵀy,   y_E ∈ [-1, 1], y_I ∈ [0, 1], y_B ∈ [0, ∞),

then d = -H(μ g + Jᵀy); y/μ estimates the Lagrange multipliers. The interior-point
solution is polished on its active set to machine precision (`polish_box_qp`).

Steering (Curtis, Mitchell & Overton): if the linearised violation reduction
l(d) = v - v_lin(d) is below c_viol·v (or d would leave a feasible point), compute the
feasibility direction (μ = 0) with reduction l_ref and shrink μ (by c_mu, c_mu², ...)
until l(d) >= c_viol·l_ref, at most `steering_steps` times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array

from jconstrain import qp
from jconstrain._solvers import sqp_hessian as hessian
from jconstrain._solvers.base import dtype_tol, rounding_level
from jconstrain._solvers.sqp_hessian import InverseHessian
from jconstrain._solvers.sqp_model import Model, Rows, violations


def polish_box_qp(M: Array, q: Array, lo: Array, hi: Array, sol: qp.QPSolution) -> Array:
    """Refine an interior-point solution of min ½yᵀMy + qᵀy, lo <= y <= hi, to machine
    precision on its active set.

    Rows whose bound multiplier exceeds their distance to the bound are fixed there; the
    free rows F solve M_FF y_F = -(q + M y_fixed)_F (lightly regularised). The polished
    point is kept only if it lies in the box and does not raise the objective.
    """
    y = sol.x
    at_lo = sol.z_lower > (y - lo)
    at_hi = (sol.z_upper > (hi - y)) & ~at_lo
    free = ~at_lo & ~at_hi
    y_fixed = jnp.where(at_lo, lo, jnp.where(at_hi, hi, 0.0))
    both = free[:, None] & free[None, :]
    eps = jnp.finfo(M.dtype).eps
    reg = 10 * eps * jnp.maximum(jnp.max(jnp.abs(jnp.diag(M)), initial=0.0), 1.0)
    K = jnp.where(both, M, 0.0) + jnp.diag(jnp.where(free, reg, 1.0))
    rhs = jnp.where(free, -(q + M @ y_fixed), y_fixed)
    y_pol = jnp.linalg.solve(K, rhs)
    objective = lambda y: 0.5 * y @ (M @ y) + q @ y
    slack = 1e3 * eps * (1.0 + jnp.abs(y_pol))
    inside = jnp.all((y_pol >= lo - slack) & (y_pol <= hi + slack))
    better = objective(y_pol) <= objective(y) + 1e3 * eps * (1.0 + jnp.abs(objective(y)))
    ok = inside & better & jnp.all(jnp.isfinite(y_pol))
    return jnp.where(ok, jnp.clip(y_pol, lo, hi), y)


def direction(model: Model, rows: Rows, H: InverseHessian, mu: Array):
    """Solve the dual steering QP for penalty μ; return (d, y, qp status)."""
    J, c = model.J, model.c
    HJt = hessian.apply(H, J.T)
    Hg = hessian.apply(H, model.g)
    M = J @ HJt
    M = 0.5 * (M + M.T)
    q = mu * (J @ Hg) - c
    # Absent rows (infinite bounds) have c = -1 and J = 0: their y is 0 at the optimum,
    # without a degenerate [0, 0] box that interior-point methods dislike.
    lo, hi = rows.dual_box(c.dtype)
    sol = qp.solve(M, q, lower=lo, upper=hi)
    y = jnp.clip(polish_box_qp(M, q, lo, hi, sol), lo, hi) * rows.on
    d = -(mu * Hg + HJt @ y)
    usable = (sol.status == qp.QPStatus.SOLVED) | (sol.status == qp.QPStatus.MAX_ITER)
    ok = usable & jnp.all(jnp.isfinite(d))
    return d, jnp.where(ok, y, 0.0), ok


def linear_reduction(model: Model, rows: Rows, d: Array, v: Array) -> Array:
    """l(d) = v - v_lin(d): the reduction of the linearised l1 violation."""
    v_lin, _ = violations(model.c + model.J @ d, rows)
    return v - v_lin


def steering_slack(model: Model, rows: Rows, viol_tol: Array) -> Array:
    """How far short of the required reduction a direction may fall: 1e-2·viol_tol (of
    the dtype) plus the rounding error of the computed c (terms Σ_j |J_ij||z_j|), so
    violations at rounding level give no reason to steer, while a step that would leave
    a feasible point does."""
    noise = jnp.sum(rounding_level(model.c, jnp.abs(model.J) @ jnp.abs(model.z)) * rows.on)
    return 1e-2 * dtype_tol(viol_tol, model.c.dtype) + noise


def steer(
    model: Model, rows: Rows, H: InverseHessian, mu: Array, v: Array, active: Array, *,
    c_viol: Array, c_mu: Array, steering_steps: int, viol_tol: Array,
):
    """Directions with μ shrunk until the linearised violation falls enough.

    One loop, one QP per pass: pass 0 tries the current μ; if its reduction
    l(d) < c_viol·v, pass 1 computes the feasibility reference (μ = 0, reduction
    l_ref) and passes 2.. retry with μ ← c_mu·μ until l(d) >= c_viol·l_ref.
    Returns (d, y, qp_ok, μ, l_ref), l_ref = inf when no reference was needed.
    """
    dtype = v.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    strictly_feasible_ineq_only = ~jnp.any(rows.is_eq & rows.on) & jnp.all(
        jnp.where(rows.on & ~rows.is_eq, model.c < -1e-6, True)
    )
    may_steer = ~strictly_feasible_ineq_only
    slack = steering_slack(model, rows, viol_tol)

    def insufficient(d, l_ref):
        return linear_reduction(model, rows, d, v) < c_viol * jnp.minimum(v, l_ref) - slack

    def cond(carry):
        k, d, y, ok, mu, mu_try, l_ref, done = carry
        return active & ~done

    def body(carry):
        k, d, y, ok, mu, mu_try, l_ref, _ = carry
        d_k, y_k, ok_k = direction(model, rows, H, mu_try)
        is_reference = k == 1
        l_ref = jnp.where(is_reference, linear_reduction(model, rows, d_k, v), l_ref)
        # The reference direction itself is never returned; keep the previous one.
        keep = is_reference
        d, y, ok = (jnp.where(keep, d, d_k), jnp.where(keep, y, y_k), jnp.where(keep, ok, ok_k))
        mu = jnp.where(keep, mu, mu_try)
        done = jnp.where(
            k == 0,
            ~may_steer | ~insufficient(d, inf),
            (k > steering_steps) | (~is_reference & ~insufficient(d, l_ref)),
        )
        # The k-th retry shrinks μ by c_mu^(k-1): 10 retries reach c_mu^45.
        mu_next = jnp.where(is_reference, mu * c_mu, mu_try * c_mu ** (k - 1).astype(dtype))
        mu_next = jnp.where(k == 0, jnp.zeros((), dtype), mu_next)
        return k + 1, d, y, ok, mu, mu_next, l_ref, done

    n, m = model.z.shape[0], model.c.shape[0]
    init = (
        jnp.asarray(0, jnp.int32),
        jnp.zeros((n,), dtype),
        jnp.zeros((m,), dtype),
        jnp.asarray(False),
        mu,
        mu,
        inf,
        jnp.asarray(False),
    )
    k, d, y, ok, mu, _, l_ref, _ = jax.lax.while_loop(cond, body, init)
    exhausted = (k > steering_steps) & insufficient(d, l_ref)
    return d, y, ok, mu, l_ref, exhausted


def descent(model: Model, rows: Rows, H: InverseHessian, mu: Array, d: Array, y: Array, qp_ok: Array) -> tuple[Array, Array]:
    """(d, Δ): the QP's direction and its predicted decrease of φ, or, if the QP failed,
    d = -H∇φ (∇φ with the signs of c) and Δ = ∇φᵀd.

    For the QP's d, Δ = dᵀ(μg + Jᵀy) = -dᵀH⁻¹d bounds the model decrease
    μgᵀd + v_lin(d) - v from above and has no cancellation near a solution. A non-finite
    Δ becomes 0 (no search)."""
    dtype = model.f.dtype
    signs = jnp.where(rows.is_eq, jnp.sign(model.c), (model.c > 0).astype(dtype)) * rows.on
    grad_phi = mu * model.g + model.J.T @ signs
    d_fallback = -hessian.apply(H, grad_phi)
    d = jnp.where(qp_ok, d, d_fallback)
    decrease = jnp.where(qp_ok, jnp.dot(d, mu * model.g + model.J.T @ y), jnp.dot(d_fallback, grad_phi))
    return d, jnp.where(jnp.isfinite(decrease), decrease, 0.0)
