"""The weak Wolfe line search for nonsmooth functions (Lewis & Overton, 2013).

Given φ(t) = merit(x + t d), φ(0) and a predicted decrease Δ < 0 (a directional
derivative or an upper bound of it), find t > 0 with

    Armijo:     φ(t) <= φ(0) + c1 t Δ
    weak Wolfe: φ'(t) >= c2 Δ          (φ'(t): a derivative of φ at t, defined a.e.)

by doubling t until the Armijo condition fails (a bracket [lo, hi]) and bisecting
inside the bracket. Non-finite trial values count as Armijo failures, so the search
backs away from NaN/Inf regions. For nonsmooth φ the weak (not strong) Wolfe
condition is what guarantees termination.
"""

from __future__ import annotations

import enum
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class SearchStatus(enum.IntEnum):
    """WOLFE: both conditions hold. ARMIJO: only sufficient decrease was reached
    (the last Armijo point is returned). FAILED: no decrease found. UNBOUNDED: t grew
    past `t_max` with the Armijo condition holding all the way."""

    WOLFE = 0
    ARMIJO = 1
    FAILED = 2
    UNBOUNDED = 3


class SearchResult(eqx.Module):
    t: Float[Array, ""]
    phi: Float[Array, ""]
    status: Int[Array, ""]
    evaluations: Int[Array, ""]


def weak_wolfe(
    phi_and_slope: Callable[[Array], tuple[Array, Array]],
    phi0: Float[Array, ""],
    decrease: Float[Array, ""],
    *,
    c1: float = 1e-4,
    c2: float = 0.5,
    t0: float | Float[Array, ""] = 1.0,
    max_evaluations: int = 60,
    t_max: float | Array = 1e10,
    enabled: bool | Array = True,
    noise: float | Array = 0.0,
) -> SearchResult:
    """Search along t for the weak Wolfe conditions (see the module docstring).

    With `enabled` False (e.g. Δ >= 0: no descent direction) nothing is evaluated
    and the result is FAILED. `noise` (>= 0) relaxes the Armijo test to
    φ(t) <= φ(0) + c1 t Δ + noise, so that near a solution, where φ changes at the level
    of its rounding error, a good step is not rejected for rounding alone.
    """
    dtype = phi0.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    eps = jnp.finfo(dtype).eps

    def cond(carry):
        k, lo, hi, t, phi_lo, done, capped = carry
        collapsed = jnp.isfinite(hi) & (hi - lo <= eps * jnp.maximum(hi, 1.0))
        return enabled & ~done & ~capped & (k < max_evaluations) & ~collapsed

    def body(carry):
        k, lo, hi, t, phi_lo, _, _ = carry
        phi_t, slope_t = phi_and_slope(t)
        armijo = jnp.isfinite(phi_t) & (phi_t <= phi0 + c1 * t * decrease + noise)
        wolfe = jnp.isfinite(slope_t) & (slope_t >= c2 * decrease)
        done = armijo & wolfe
        hi = jnp.where(armijo, hi, t)
        lo_new = jnp.where(armijo, t, lo)
        phi_lo = jnp.where(armijo, phi_t, phi_lo)
        expand = jnp.minimum(2.0 * lo_new, t_max)
        capped = ~done & ~jnp.isfinite(hi) & (lo_new >= t_max)  # Armijo holds at the cap: stop
        t_next = jnp.where(done, t, jnp.where(jnp.isfinite(hi), 0.5 * (lo_new + hi), expand))
        return k + 1, lo_new, hi, t_next, phi_lo, done, capped

    t0 = jnp.minimum(jnp.asarray(t0, dtype), t_max)
    false = jnp.asarray(False)
    init = (jnp.asarray(0, jnp.int32), jnp.zeros((), dtype), inf, t0, phi0, false, false)
    k, lo, hi, t, phi_lo, wolfe, at_cap = jax.lax.while_loop(cond, body, init)
    status = jnp.where(
        wolfe,
        SearchStatus.WOLFE,
        jnp.where(at_cap, SearchStatus.UNBOUNDED, jnp.where(lo > 0, SearchStatus.ARMIJO, SearchStatus.FAILED)),
    )
    t_out = lo
    return SearchResult(t=t_out, phi=phi_lo, status=status.astype(jnp.int32), evaluations=k)
