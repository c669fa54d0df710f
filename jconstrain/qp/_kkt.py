"""The linear algebra of one interior-point iteration: the bordered Newton system.

With D = diag(z / s) on the cone rows and xi = x / tau, one Newton step of the
homogeneous embedding (see `_ipm`) solves, for (dx, dy, dz, dtau),

    Q dx + A^T dy + G^T dz + c dtau                         = r1
    A dx                    - b dtau                        = r2
    G dx - D^{-1} dz        - h dtau                        = r3
    (c + 2 Q xi)^T dx + b^T dy + h^T dz - (kappa/tau + xi^T Q xi) dtau = r4.

The bound rows of G are diagonal and are eliminated, dz_b = D_b (G_b dx - h_b dtau - r3_b);
the general inequalities stay in augmented form (eliminating them too would form
A_ineq^T D A_ineq, whose huge range near the solution washes out everything else).
What is left, of size n + m_eq + m_ineq + 1, is LU-factorised once per iteration
with a quasi-definite regularisation diag(+delta, -delta, -delta, 0), and every solve
is refined against the exact matrix. Keeping dtau inside the factorised system (rather
than eliminating it through two solves with M = [[Q + G^T D G, A^T], [A, 0]] as
Clarabel does) keeps the step well defined when M is singular: unbounded directions
(Q d = 0, A d = 0, G d = 0) and inconsistent equalities are exactly where a dual or
primal infeasibility certificate must come from.

Why this form: with A_ineq^T D A_ineq formed (normal equations) the dual residual
stalls far above tolerance as D's range grows; with the two-solve elimination an
unbounded QP (min x1^2/2 - x2) or inconsistent equalities run into NaN instead of a
certificate. The bordered, augmented form handles both.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float

from jconstrain.qp._data import QPData

REFINEMENT_STEPS = 3


def regularisation(dtype) -> float:
    """delta = eps^0.6: 4e-10 in float64, 7e-5 in float32 (the data are equilibrated)."""
    return float(jnp.finfo(dtype).eps) ** 0.6


def _dominant(D_lo: Array, D_up: Array) -> tuple[Array, Array]:
    """Where a bound looks active (its D > 1 and larger than the other bound's)."""
    return (D_lo > D_up) & (D_lo > 1), (D_up >= D_lo) & (D_up > 1)


def _bound_multipliers(t, dz_lo, dz_up, D_lo, D_up) -> tuple[Array, Array]:
    """Recover dz_lo, dz_up from dz_up - dz_lo = t (the stationarity row).

    The bound rows give dz = D (G_b dx - h_b dtau - r3_b), but near an active bound
    D ~ 1/eps amplifies the rounding error of dx, so the multiplier of the dominant
    bound is taken from t instead.
    """
    lo_active, up_active = _dominant(D_lo, D_up)
    dz_lo = jnp.where(lo_active, dz_up - t, dz_lo)
    dz_up = jnp.where(up_active, dz_lo + t, dz_up)
    return jnp.where(D_lo > 0, dz_lo, 0.0), jnp.where(D_up > 0, dz_up, 0.0)


def newton_solver(
    data: QPData, x: Array, z: Array, s: Array, tau: Array, kappa: Array
) -> Callable[[Array, Array, Array, Array], tuple[Array, Array, Array, Array]]:
    """Factorise the bordered Newton matrix at (x, z, s, tau, kappa).

    Returns (r1, r2, r3, r4) -> (dx, dy, dz, dtau), the solution of the system in the
    module docstring (dz = 0 on masked rows).

    Eliminating an active bound (D ~ 1/eps) naively puts D u into both the tau column
    and the tau row, whose product cancels catastrophically. So the system is written
    in dx = w + beta dtau, with beta_i the value of x_i's dominant bound (else 0), and
    the tau row has beta^T (x rows) subtracted: a change of origin to beta in the
    homogeneous variables, after which every D multiplies (bound - beta) = 0 there.
    """
    n, m_eq, m_in = data.n, data.b_eq.shape[-1], data.b_in.shape[-1]
    dtype = data.c.dtype
    D = data.mask * z / jnp.where(data.mask > 0, s, 1.0)
    _, D_lo, D_up = data.split(D)
    s_in, z_in = data.split(s)[0], data.split(z)[0]
    lo_active, up_active = _dominant(D_lo, D_up)
    beta = jnp.where(lo_active, data.lower, jnp.where(up_active, data.upper, 0.0))
    l_b, u_b = data.lower - beta, data.upper - beta
    b_eq, b_in = data.b_eq - data.A_eq @ beta, data.b_in - data.A_in @ beta
    xi = x / tau
    p = D_lo * l_b + D_up * u_b
    col_tau = jnp.concatenate([data.c + data.Q @ beta - p, -b_eq, -b_in])
    row_tau = jnp.concatenate([data.c + data.Q @ (2 * xi - beta) + p, b_eq, b_in])
    corner = -(kappa / tau + (xi - beta) @ (data.Q @ (xi - beta)) + jnp.sum(D_lo * l_b**2 + D_up * u_b**2))
    N = n + m_eq + m_in
    K = jnp.block([
        [data.Q + jnp.diag(D_lo + D_up), data.A_eq.T, data.A_in.T, col_tau[:n, None]],
        [data.A_eq, jnp.zeros((m_eq, m_eq + m_in), dtype), col_tau[n : n + m_eq, None]],
        [data.A_in, jnp.zeros((m_in, m_eq), dtype), -jnp.diag(s_in / z_in), col_tau[n + m_eq :, None]],
        [row_tau[None, :], corner[None, None]],
    ])
    delta = regularisation(dtype) * jnp.concatenate(
        [jnp.ones(n, dtype), -jnp.ones(m_eq + m_in, dtype), jnp.zeros(1, dtype)]
    )
    lu = jsl.lu_factor(K + jnp.diag(delta))

    def solve(r1: Array, r2: Array, r3: Array, r4: Array) -> tuple[Array, Array, Array, Array]:
        r3_in, r3_lo, r3_up = data.split(r3)
        r1_b = r1 - D_lo * r3_lo + D_up * r3_up
        r4_b = r4 - beta @ r1 - l_b @ (D_lo * r3_lo) + u_b @ (D_up * r3_up)
        rhs = jnp.concatenate([r1_b, r2, r3_in, r4_b[None]])
        # The first pass (from sol = 0) is the plain solve; the others refine it.
        refine = lambda _, sol: sol + jsl.lu_solve(lu, rhs - K @ sol)
        sol = jax.lax.fori_loop(0, 1 + REFINEMENT_STEPS, refine, jnp.zeros_like(rhs))
        w, dy, dz_in, dtau = sol[:n], sol[n : n + m_eq], sol[n + m_eq : N], sol[N]
        dx = w + beta * dtau
        t = r1 - data.Q @ dx - data.A_eq.T @ dy - data.A_in.T @ dz_in - data.c * dtau
        dz_lo, dz_up = _bound_multipliers(
            t, D_lo * (-w + l_b * dtau - r3_lo), D_up * (w - u_b * dtau - r3_up), D_lo, D_up
        )
        return dx, dy, jnp.concatenate([dz_in, dz_lo, dz_up]), dtau

    return solve


def initial_solve(data: QPData, reg: float) -> tuple[Float[Array, " n"], Float[Array, " m_eq"]]:
    """x, y of min 1/2 x^T Q x + c^T x + 1/2 |h - G x|^2 + reg/2 |x|^2 s.t. A x = b (regularised).

    Solves [[Q + G^T G + reg I, A^T], [A, -reg I]] [x; y] = [-c + G^T h; b] in the
    augmented form of `newton_solver` with D = I. The proximal term keeps x bounded
    when Q + G^T G is singular on the null space of A (free directions, inconsistent
    or dependent equalities).
    """
    n, m_eq, m_in = data.n, data.b_eq.shape[-1], data.b_in.shape[-1]
    dtype = data.c.dtype
    _, has_lo, has_up = data.split(data.mask)
    K = jnp.block([
        [data.Q + jnp.diag(has_lo + has_up + reg), data.A_eq.T, data.A_in.T],
        [data.A_eq, -reg * jnp.eye(m_eq, dtype=dtype), jnp.zeros((m_eq, m_in), dtype)],
        [data.A_in, jnp.zeros((m_in, m_eq), dtype), -(1.0 + reg) * jnp.eye(m_in, dtype=dtype)],
    ])
    rhs = jnp.concatenate([-data.c + has_lo * data.lower + has_up * data.upper, data.b_eq, data.b_in])
    sol = jnp.linalg.solve(K, rhs)
    return sol[:n], sol[n : n + m_eq]
