"""Ruiz equilibration of a QP and the maps back to the user's units.

With positive diagonal scalings D (variables), E (constraint rows) and a cost factor
sigma, the scaled problem in x~ = D^{-1} x is

    Q~ = sigma D Q D,  c~ = sigma D c,  A~ = E A D,  b~ = E b,  l~ = D^{-1} l,  u~ = D^{-1} u.

D and E come from Ruiz's iteration on the KKT matrix K = [[Q, A^T], [A, 0]], A the
stacked equality and inequality rows: each sweep divides every row and column of the
scaled K by the square root of its infinity norm, which drives all of them towards 1
(Ruiz 2001; OSQP does the same). Then D <- rho D and E <- E / rho (E A D is unchanged)
with rho the largest scaled right-hand side or finite bound, so that the scaled
iterates are O(1) even when the data (and the solution) are tiny, e.g. an SQP
subproblem near convergence; last sigma = 1 / max(mean column norm of Q~, |c~|_inf)
(OSQP's cost scaling). Ruiz and cost factors are clipped to [1e-4, 1e4] per step,
rho to [1e-12, 1e12]. Multipliers map back as y = E y~ / sigma for rows of A and
z = z~ / (sigma D) for the bounds; a cone vector's scale is `cone_scale`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jconstrain.qp._data import QPData

_MIN_NORM, _MAX_NORM = 1e-4, 1e4
_MIN_RHO, _MAX_RHO = 1e-12, 1e12


class Scaling(eqx.Module):
    """x = d * x~; rows of A_eq (A_ineq) were multiplied by e_eq (e_in); costs by `cost`."""

    d: Float[Array, " n"]
    e_eq: Float[Array, " m_eq"]
    e_in: Float[Array, " m_in"]
    cost: Float[Array, ""]

    @property
    def cone_scale(self) -> Float[Array, " m_c"]:
        """Row scale of G~ = diag(cone_scale) G D: a cone multiplier is z = cone_scale z~ / cost."""
        return jnp.concatenate([self.e_in, 1.0 / self.d, 1.0 / self.d])


def _clipped(norm: Array) -> Array:
    return jnp.clip(jnp.where(norm > 0, norm, 1.0), _MIN_NORM, _MAX_NORM)


def _ruiz_sweep(Q: Array, A: Array, d: Array, e: Array) -> tuple[Array, Array]:
    """One Ruiz sweep: divide d (e) by the root of the column (row) norms of the scaled K."""
    Qs = d[:, None] * Q * d[None, :]
    As = e[:, None] * A * d[None, :]
    col = jnp.maximum(jnp.max(jnp.abs(Qs), axis=0, initial=0.0), jnp.max(jnp.abs(As), axis=0, initial=0.0))
    row = jnp.max(jnp.abs(As), axis=1, initial=0.0)
    return d / jnp.sqrt(_clipped(col)), e / jnp.sqrt(_clipped(row))


def apply(data: QPData, scaling: Scaling) -> QPData:
    """The scaled problem (see the module docstring)."""
    d, s = scaling.d, scaling.cost
    return eqx.tree_at(
        lambda p: (p.Q, p.c, p.A_eq, p.b_eq, p.A_in, p.b_in, p.lower, p.upper),
        data,
        (
            s * d[:, None] * data.Q * d[None, :],
            s * d * data.c,
            scaling.e_eq[:, None] * data.A_eq * d[None, :],
            scaling.e_eq * data.b_eq,
            scaling.e_in[:, None] * data.A_in * d[None, :],
            scaling.e_in * data.b_in,
            data.lower / d,
            data.upper / d,
        ),
    )


def equilibrate(data: QPData, sweeps: int = 15) -> tuple[QPData, Scaling]:
    """Ruiz-equilibrate `data`; return the scaled problem and the `Scaling` used."""
    dtype = data.c.dtype
    m_eq = data.b_eq.shape[-1]
    A = jnp.concatenate([data.A_eq, data.A_in], axis=0)
    d0 = jnp.ones(data.c.shape, dtype)
    e0 = jnp.ones(A.shape[:1], dtype)
    d, e = jax.lax.fori_loop(0, sweeps, lambda _, de: _ruiz_sweep(data.Q, A, *de), (d0, e0))
    # Scale x by the size of the right-hand sides and bounds, keeping E A D unchanged.
    rhs = e * jnp.concatenate([data.b_eq, data.b_in])
    bounds = jnp.concatenate([jnp.where(data.has_lower, data.lower, 0.0), jnp.where(data.has_upper, data.upper, 0.0)])
    rho = jnp.maximum(jnp.max(jnp.abs(rhs), initial=0.0), jnp.max(jnp.abs(bounds / jnp.concatenate([d, d])), initial=0.0))
    rho = jnp.clip(jnp.where(rho > 0, rho, 1.0), _MIN_RHO, _MAX_RHO)
    # With x = rho D x^, dividing the objective by rho^2 keeps D Q D and turns D c into D c / rho.
    Qs = d[:, None] * data.Q * d[None, :]
    q_norm = jnp.mean(jnp.max(jnp.abs(Qs), axis=0)) if data.c.shape[-1] else jnp.zeros((), dtype)
    cost = 1.0 / (rho**2 * _clipped(jnp.maximum(q_norm, jnp.max(jnp.abs(d * data.c), initial=0.0) / rho)))
    d, e = d * rho, e / rho
    scaling = Scaling(d=d, e_eq=e[:m_eq], e_in=e[m_eq:], cost=cost.astype(dtype))
    return apply(data, scaling), scaling
