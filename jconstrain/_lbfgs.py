"""Limited-memory inverse BFGS with the damping of `jconstrain._bfgs`, for large n.

H is never formed. It is represented by H0 = γ I and the last m (at most) pairs
(sᵢ, yᵢ), ρᵢ = 1 / (sᵢᵀyᵢ), as the result of applying the inverse BFGS update

    H+ = (I - ρ s yᵀ) H (I - ρ y sᵀ) + ρ s sᵀ

to H0 with each stored pair, oldest first. H v is computed by the two-loop recursion
(Nocedal & Wright, Algorithm 7.4), with the pairs indexed newest (i = 0) to oldest:

    q = v
    for i = 0, 1, ..., k-1:   αᵢ = ρᵢ sᵢᵀq,   q = q - αᵢ yᵢ
    r = γ q
    for i = k-1, ..., 1, 0:   βᵢ = ρᵢ yᵢᵀr,   r = r + (αᵢ - βᵢ) sᵢ
    H v = r

at a cost of O(m n). The pairs live in fixed-size ring buffers (m static, taken from
the buffers' shape); slots not yet filled are masked out (ρ = 0 there makes both loops
skip them), so everything is jit- and vmap-able with no branching on traced values.

Updates use the same rule as `bfgs.inverse_update`: when sᵀy < δ yᵀHy (H the current
approximation, H y = `apply(mem, y)`), s is replaced by

    s̃ = θ s + (1 - θ) H y,      θ = (1 - δ) yᵀHy / (yᵀHy - sᵀy),

so that s̃ᵀy = δ yᵀHy > 0, and the pair (s̃, y) is stored. Updates with s̃ᵀy <= 0 or
non-finite values are skipped and leave the memory unchanged. At the first applied update
γ is set to sᵀy / yᵀy (Nocedal-Wright 6.20) before damping, as in `bfgs.inverse_update`
with `first=True`; with memory >= number of updates, `dense(mem)` is then the matrix that
the full-memory update sequence from H0 = γ I gives. Optionally (`rescale=True`) γ is
reset to s̃ᵀy / yᵀy at every update, the usual L-BFGS choice (Nocedal-Wright 7.20).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jconstrain._bfgs import BFGSInfo, damp, initial_scale


class LBFGSMemory(eqx.Module):
    """Ring buffers of the last m pairs. Slot `next` is written by the next update;
    `count` counts all applied updates, so min(count, m) slots are filled. Slots hold
    the damped s̃, and ρ = 1 / (s̃ᵀy); unfilled slots are zero."""

    S: Float[Array, "m n"]
    Y: Float[Array, "m n"]
    rho: Float[Array, " m"]
    gamma: Float[Array, ""]
    count: Int[Array, ""]
    next: Int[Array, ""]


def init(n: int, memory: int = 10, dtype=None) -> LBFGSMemory:
    """An empty memory of `memory` pairs in R^n: H = I until the first update."""
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    return LBFGSMemory(
        S=jnp.zeros((memory, n), dtype),
        Y=jnp.zeros((memory, n), dtype),
        rho=jnp.zeros((memory,), dtype),
        gamma=jnp.ones((), dtype),
        count=jnp.zeros((), jnp.int32),
        next=jnp.zeros((), jnp.int32),
    )


def _slot(mem: LBFGSMemory, i: Int[Array, ""]) -> Int[Array, ""]:
    """The buffer slot of the i-th newest pair (i = 0: the newest)."""
    return (mem.next - 1 - i) % mem.S.shape[0]


def apply(mem: LBFGSMemory, v: Float[Array, "n *k"]) -> Float[Array, "n *k"]:
    """H v by the two-loop recursion (see the module docstring); a matrix v (n, k) is
    multiplied column by column."""
    if v.ndim == 2:
        return jax.vmap(lambda column: apply(mem, column), in_axes=1, out_axes=1)(v)
    m = mem.S.shape[0]
    filled = jnp.minimum(mem.count, m)
    positions = jnp.arange(m)

    def rho_at(i, j):
        return jnp.where(i < filled, mem.rho[j], 0.0)

    def newest_to_oldest(q, i):
        j = _slot(mem, i)
        alpha = rho_at(i, j) * jnp.dot(mem.S[j], q)
        return q - alpha * mem.Y[j], alpha

    def oldest_to_newest(r, i_alpha):
        i, alpha = i_alpha
        j = _slot(mem, i)
        beta = rho_at(i, j) * jnp.dot(mem.Y[j], r)
        return r + (alpha - beta) * mem.S[j], None

    q, alphas = jax.lax.scan(newest_to_oldest, v, positions)
    r, _ = jax.lax.scan(oldest_to_newest, mem.gamma * q, (positions, alphas), reverse=True)
    return r


def dense(mem: LBFGSMemory) -> Float[Array, "n n"]:
    """The dense H that `mem` represents, H I column by column (for tests and small n)."""
    n = mem.S.shape[1]
    H = apply(mem, jnp.eye(n, dtype=mem.S.dtype))
    return 0.5 * (H + H.T)


def update(
    mem: LBFGSMemory,
    s: Float[Array, " n"],
    y: Float[Array, " n"],
    damping: float | Float[Array, ""] = 1e-4,
    *,
    rescale: bool = False,
) -> tuple[LBFGSMemory, BFGSInfo]:
    """Store the damped pair (s̃, y), overwriting the oldest pair once the memory is full
    (see the module docstring). `rescale` (static) resets γ = s̃ᵀy / yᵀy every update."""
    dtype = mem.S.dtype
    s = jnp.asarray(s, dtype)
    y = jnp.asarray(y, dtype)
    yy = jnp.dot(y, y)
    gamma0, scale_ok = initial_scale(s, y)
    gamma = jnp.where((mem.count == 0) & scale_ok, gamma0, mem.gamma)
    Hy = apply(eqx.tree_at(lambda t: t.gamma, mem, gamma), y)
    s_t, damped = damp(s, y, Hy, damping)
    sy_t = jnp.dot(s_t, y)
    rho = 1.0 / jnp.where(sy_t > 0, sy_t, 1.0)
    if rescale:
        gamma = jnp.where(sy_t > 0, sy_t / jnp.where(yy > 0, yy, 1.0), gamma)
    ok = (sy_t > 0) & jnp.isfinite(rho) & jnp.isfinite(gamma) & (gamma > 0)
    ok = ok & jnp.all(jnp.isfinite(s_t)) & jnp.all(jnp.isfinite(y))
    new = LBFGSMemory(
        S=mem.S.at[mem.next].set(s_t),
        Y=mem.Y.at[mem.next].set(y),
        rho=mem.rho.at[mem.next].set(rho.astype(dtype)),
        gamma=gamma.astype(dtype),
        count=mem.count + 1,
        next=(mem.next + 1) % mem.S.shape[0],
    )
    mem = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, mem)
    return mem, BFGSInfo(applied=ok, damped=damped & ok)
