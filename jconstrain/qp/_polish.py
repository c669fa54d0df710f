"""Polishing: re-solve an interior-point solution exactly on its active set (as OSQP does).

An interior point approaches the optimum from inside, so a component whose bound is
active with a zero multiplier (non-strict complementarity) converges only like
sqrt(mu). Guessing the active set from the solution (a constraint is active when its
multiplier exceeds its slack) and solving the equality-constrained QP

    Q x + c + A_eq^T y + A_act^T y_act = 0 on the free variables,
    A_eq x = b_eq,  A_act x = b_act,  x_i = bound_i on the variables fixed at a bound,

gives the optimum to rounding error when the guess is right. The bound multipliers are
the stationarity residuals of the fixed variables. Everything happens in the scaled
problem, where the rows are equilibrated: the polished point is kept only if it is at
least as good there (no larger violation and stationarity residual, or both within tol
of the data's size) and its multipliers are >= -tol (then clipped at 0). Shapes are
static: inactive rows and fixed variables become identity rows of one
(n + m_eq + m_ineq) system.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array

from jconstrain.qp._data import QPData
from jconstrain.qp._ipm import IPMState, _inf_norm
from jconstrain.qp._kkt import REFINEMENT_STEPS, regularisation
from jconstrain.qp._status import QPStatus


def _active_set(data: QPData, x, z) -> tuple[Array, Array, Array]:
    """(active inequality rows, variables at their lower bound, at their upper bound)."""
    z_in, z_lo, z_up = data.split(z)
    act_in = z_in > data.b_in - data.A_in @ x
    at_lo = data.has_lower & (z_lo > x - data.lower)
    at_up = data.has_upper & (z_up > data.upper - x) & ~at_lo
    return act_in, at_lo, at_up


def polish(data: QPData, x: Array, z: Array) -> tuple[Array, Array, Array, Array, Array]:
    """(x, y_eq, y_ineq, z_lower, z_upper) solving the QP on the active set guessed from
    the interior-point solution (x, z) (in the units of `data`)."""
    n, m_eq, m_in = data.n, data.b_eq.shape[-1], data.b_in.shape[-1]
    dtype = data.c.dtype
    act_in, at_lo, at_up = _active_set(data, x, z)
    fixed = at_lo | at_up
    free = ~fixed[:, None]
    active = act_in[:, None]
    # x rows: stationarity for free variables, x_i = bound_i for fixed ones; inequality
    # rows: A_i x = b_i when active, y_i = 0 when not.
    K = jnp.block([
        [jnp.where(free, data.Q, jnp.eye(n, dtype=dtype)), jnp.where(free, data.A_eq.T, 0.0), jnp.where(free, data.A_in.T, 0.0)],
        [data.A_eq, jnp.zeros((m_eq, m_eq + m_in), dtype)],
        [jnp.where(active, data.A_in, 0.0), jnp.zeros((m_in, m_eq), dtype), jnp.diag(jnp.where(act_in, 0.0, 1.0))],
    ])
    delta = regularisation(dtype)
    reg = jnp.concatenate([jnp.where(fixed, 0.0, delta), jnp.full(m_eq, -delta, dtype), jnp.where(act_in, -delta, 0.0)])
    lu = jsl.lu_factor(K + jnp.diag(reg))
    bound = jnp.where(at_lo, data.lower, data.upper)
    rhs = jnp.concatenate([jnp.where(fixed, bound, -data.c), data.b_eq, jnp.where(act_in, data.b_in, 0.0)])
    refine = lambda _, sol: sol + jsl.lu_solve(lu, rhs - K @ sol)
    sol = jax.lax.fori_loop(0, 1 + REFINEMENT_STEPS, refine, jnp.zeros_like(rhs))
    x, y_eq, y_in = sol[:n], sol[n : n + m_eq], sol[n + m_eq :]
    r = data.Q @ x + data.c + data.A_eq.T @ y_eq + data.A_in.T @ y_in
    return x, y_eq, y_in, jnp.where(at_lo, r, 0.0), jnp.where(at_up, -r, 0.0)


def _violation(data: QPData, x: Array) -> Array:
    return _inf_norm(data.A_eq @ x - data.b_eq, data.mask * jnp.maximum(data.G_mv(x) - data.h, 0.0))


def _stationarity(data: QPData, x: Array, y: Array, z: Array) -> Array:
    return _inf_norm(data.Q @ x + data.c + data.A_eq.T @ y + data.GT_mv(z))


def polished(data: QPData, st: IPMState, tol) -> IPMState:
    """A SOLVED iterate replaced by its polished version (scaled by tau) when that is no
    worse (module docstring); any other iterate unchanged."""
    x, y, z = st.x / st.tau, st.y / st.tau, st.z / st.tau
    px, py, pz_in, pz_lo, pz_up = polish(data, x, z)
    pz = jnp.concatenate([pz_in, pz_lo, pz_up])
    size_p = jnp.maximum(_inf_norm(data.b_eq, data.mask * data.h), tol)
    size_d = jnp.maximum(_inf_norm(data.c, py, pz), tol)
    pz_clipped = data.mask * jnp.maximum(pz, 0.0)
    no_worse = lambda new, old, size: (new <= old) | (new <= tol * size)
    keep = (
        (st.status == QPStatus.SOLVED)
        & jnp.all(jnp.isfinite(jnp.concatenate([px, py, pz])))
        & no_worse(_violation(data, px), _violation(data, x), size_p)
        & no_worse(_stationarity(data, px, py, pz_clipped), _stationarity(data, x, y, z), size_d)
        & (jnp.min(jnp.where(data.mask > 0, pz, 0.0), initial=0.0) >= -tol * size_d)
    )
    ps = data.mask * jnp.maximum(data.h - data.G_mv(px), 0.0)
    choose = lambda new, old: jnp.where(keep, new * st.tau, old)
    return eqx.tree_at(
        lambda s: (s.x, s.y, s.z, s.s),
        st,
        (choose(px, st.x), choose(py, st.y), choose(pz_clipped, st.z), jnp.where(keep, ps * st.tau, st.s)),
    )
