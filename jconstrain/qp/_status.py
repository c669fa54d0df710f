"""What `jc.qp.solve` returns: the `QPStatus` codes and the `QPSolution` module."""

from __future__ import annotations

import enum

import equinox as eqx
from jaxtyping import Array, Float, Int


class QPStatus(enum.IntEnum):
    """Outcome of a QP solve; `QPStatus(int(sol.status))` names a code.

    - SOLVED: primal residual, dual residual and complementarity below `tol`.
    - MAX_ITER: stopped before `tol` was met: `max_iter` steps were taken, or mu made no
      progress for 5 steps (rounding errors dominate, e.g. a nearly infeasible problem).
      The returned point is the last iterate, often still a good approximation.
    - PRIMAL_INFEASIBLE: a Farkas certificate was found; the multiplier fields hold it.
    - DUAL_INFEASIBLE: the QP is unbounded below; `x` holds a direction of descent.
    - NONFINITE: NaN/Inf in the data or the iterates.
    """

    SOLVED = 0
    MAX_ITER = 1
    PRIMAL_INFEASIBLE = 2
    DUAL_INFEASIBLE = 3
    NONFINITE = 4


class QPSolution(eqx.Module):
    """The result of `jc.qp.solve`, for

        minimise 1/2 x^T Q x + c^T x
        s.t. A_eq x = b_eq,  A_ineq x <= b_ineq,  lower <= x <= upper.

    At a SOLVED point the KKT conditions hold to tolerance:

        Q x + c + A_eq^T y_eq + A_ineq^T y_ineq - z_lower + z_upper = 0,
        y_ineq, z_lower, z_upper >= 0,  each times its constraint's slack = 0.

    `z_lower`/`z_upper` are exactly zero where the bound is infinite.
    `primal_residual` is the largest constraint violation of `x` (bounds included),
    `dual_residual` the infinity norm of the stationarity residual above, `objective`
    is 1/2 x^T Q x + c^T x, `iterations` the number of interior-point steps taken.

    On PRIMAL_INFEASIBLE the multiplier fields hold a Farkas certificate scaled to unit
    infinity norm: b_eq^T y_eq + b_ineq^T y_ineq - lower^T z_lower + upper^T z_upper < 0
    while A_eq^T y_eq + A_ineq^T y_ineq - z_lower + z_upper ~ 0. On DUAL_INFEASIBLE `x`
    holds a direction d of unit infinity norm with Q d ~ 0, A_eq d ~ 0, A_ineq d <= ~0,
    d in the recession cone of the bounds and c^T d < 0.
    """

    x: Float[Array, " n"]
    y_eq: Float[Array, " m_eq"]
    y_ineq: Float[Array, " m_ineq"]
    z_lower: Float[Array, " n"]
    z_upper: Float[Array, " n"]
    status: Int[Array, ""]
    iterations: Int[Array, ""]
    primal_residual: Float[Array, ""]
    dual_residual: Float[Array, ""]
    objective: Float[Array, ""]
