"""`jc.qp.solve`: the front door of the dense QP solver."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jconstrain.qp import _ipm as ipm
from jconstrain.qp._data import QPData, canonical
from jconstrain.qp._polish import polished
from jconstrain.qp._scaling import Scaling, equilibrate
from jconstrain.qp._status import QPSolution, QPStatus

_DEFAULT_TOL = {2: 1e-2, 4: 1e-5, 8: 1e-10}


def default_tol(dtype) -> float:
    """The default `tol`: 1e-10 in float64, 1e-5 in float32."""
    return _DEFAULT_TOL.get(jnp.dtype(dtype).itemsize, 1e-10)


def solve(
    Q: Float[ArrayLike, "n n"],
    c: Float[ArrayLike, " n"],
    A_eq: Float[ArrayLike, "m_eq n"] | None = None,
    b_eq: Float[ArrayLike, " m_eq"] | None = None,
    A_ineq: Float[ArrayLike, "m_ineq n"] | None = None,
    b_ineq: Float[ArrayLike, " m_ineq"] | None = None,
    lower: Float[ArrayLike, " n"] | None = None,
    upper: Float[ArrayLike, " n"] | None = None,
    *,
    max_iter: int = 50,
    tol: float | None = None,
    warm_start: QPSolution | None = None,
) -> QPSolution:
    """Solve the convex QP

        minimise 1/2 x^T Q x + c^T x
        s.t. A_eq x = b_eq,  A_ineq x <= b_ineq,  lower <= x <= upper

    with Q symmetric positive semidefinite (singular allowed: Q = 0 is an LP; only its
    symmetric part is used) and bounds that may be -inf/+inf. Pure JAX: composes with `jax.jit` and `jax.vmap`
    over any input; the status is data (`QPStatus`), never an exception.

    Method: Ruiz equilibration (`jconstrain.qp._scaling`), then a homogeneous self-dual
    interior-point method with Mehrotra predictor-corrector steps (`jconstrain.qp._ipm`,
    linear algebra in `jconstrain.qp._kkt`), which detects primal and dual
    infeasibility from the same iterates, typically in 6-15 iterations; a solved
    problem is then polished on its active set (`jconstrain.qp._polish`), which makes
    the answer exact to rounding error when the active set is identified.

    Args:
        Q: the `(n, n)` quadratic term. All arrays are cast to their promoted float dtype.
        c: the `(n,)` linear term.
        A_eq: `(m_eq, n)` equality rows; None (with b_eq) or 0 rows for none.
        b_eq: `(m_eq,)` equality right-hand sides.
        A_ineq: `(m_ineq, n)` inequality rows; None (with b_ineq) or 0 rows for none.
        b_ineq: `(m_ineq,)` inequality right-hand sides.
        lower: `(n,)` lower bounds (-inf allowed); None for none.
        upper: `(n,)` upper bounds (+inf allowed); None for none.
        max_iter: the most interior-point steps: an int, or an integer scalar array
            (traced is fine: the cap is a `lax.while_loop` bound, not a static value).
        tol: relative KKT tolerance (each residual against the largest term it is made
            of); None picks 1e-10 in float64, 1e-5 in float32. Infeasibility
            certificates are accepted at max(tol, sqrt(eps)).
        warm_start: a `QPSolution` of a QP of the same shapes (e.g. the previous SQP
            subproblem). The start is a mix of it and the cold start, weighted by how
            much closer to optimal it is (`jconstrain.qp._ipm.warm_start`); a solution
            that is no better, or not finite, gives a cold start.

    Returns:
        A `QPSolution` (see there for the certificates returned on infeasibility).

    Raises:
        ValueError: a shape is inconsistent (the message names the argument).
        TypeError: an argument is not a real array.
    """
    data, finite, crossed = canonical(Q, c, A_eq, b_eq, A_ineq, b_ineq, lower, upper)
    if warm_start is not None:
        _check_warm_start(warm_start, data)
    _check_max_iter(max_iter)
    tol = jnp.asarray(default_tol(data.c.dtype) if tol is None else tol, data.c.dtype)
    return _solve(data, finite, crossed, warm_start, tol, jnp.asarray(max_iter, jnp.int32))


@eqx.filter_jit
def _solve(data: QPData, finite, crossed, warm_start: QPSolution | None, tol, max_iter) -> QPSolution:
    """Scale, start (cold, or mixed with the warm start), iterate, unscale.

    `max_iter` is traced, so calls that differ only in it share one compilation.
    """
    sdata, scaling = equilibrate(data)
    st = ipm.cold_start(sdata)
    if warm_start is not None:
        st = ipm.warm_start(sdata, scaling, warm_start, st)
    consistent = ~jnp.any(crossed)
    status = jnp.where(finite, jnp.where(consistent, ipm.RUNNING, QPStatus.PRIMAL_INFEASIBLE), QPStatus.NONFINITE)
    st = eqx.tree_at(lambda s: s.status, st, status.astype(jnp.int32))
    tol_inf = jnp.maximum(tol, jnp.sqrt(jnp.finfo(tol.dtype).eps))
    st = ipm.iterate(data, sdata, scaling, st, max_iter, tol, tol_inf)
    return _solution(data, scaling, polished(sdata, st, tol), crossed)


def _check_max_iter(max_iter) -> None:
    if isinstance(max_iter, (bool, np.bool_)):
        raise TypeError("qp.solve: `max_iter` must be an int, got a bool.")
    if isinstance(max_iter, (int, np.integer)):
        if max_iter < 0:
            raise ValueError(f"qp.solve: `max_iter` must be nonnegative, got {max_iter}.")
    elif jnp.ndim(max_iter) != 0 or not jnp.issubdtype(jnp.result_type(max_iter), jnp.integer):
        raise TypeError(f"qp.solve: `max_iter` must be an int or an integer scalar array, got {max_iter!r}.")


def _check_warm_start(ws: QPSolution, data: QPData) -> None:
    if not isinstance(ws, QPSolution):
        raise TypeError(f"qp.solve: `warm_start` must be a QPSolution, got {type(ws).__name__}.")
    n, m_eq, m_in = data.n, data.b_eq.shape[-1], data.b_in.shape[-1]
    expected = dict(x=(n,), y_eq=(m_eq,), y_ineq=(m_in,), z_lower=(n,), z_upper=(n,))
    for name, shape in expected.items():
        got = tuple(jnp.shape(getattr(ws, name)))
        if got != shape:
            raise ValueError(f"qp.solve: `warm_start.{name}` must have shape {shape}, got {got}.")


def _unit(v: Array, *rest: Array) -> Array:
    """Scale v (and rest) by one factor so that their joint infinity norm is 1."""
    norm = jnp.max(jnp.stack([jnp.max(jnp.abs(a), initial=0.0) for a in (v, *rest)]))
    return 1.0 / jnp.where(norm > 0, norm, 1.0)


def _solution(data: QPData, scaling: Scaling, st: ipm.IPMState, crossed) -> QPSolution:
    """Map the final iterate back to the user's units; certificates on infeasibility.

    Crossed bounds (lower_i > upper_i) are certified by z_lower_i = z_upper_i = 1.
    """
    p = ipm.unscale(scaling, st)
    cert = ipm.unscale(scaling, st, tau=jnp.ones_like(st.tau))
    k = _unit(cert.y, cert.z)
    cert_y, cert_z = k * cert.y, k * cert.z
    bound_cert = jnp.concatenate([jnp.zeros_like(data.b_in), crossed, crossed]).astype(cert_z.dtype)
    cert_y = jnp.where(jnp.any(crossed), 0.0, cert_y)
    cert_z = jnp.where(jnp.any(crossed), bound_cert, cert_z)
    primal_inf = st.status == QPStatus.PRIMAL_INFEASIBLE
    y = jnp.where(primal_inf, cert_y, p.y)
    z = jnp.where(primal_inf, cert_z, data.mask * p.z)
    x = jnp.where(st.status == QPStatus.DUAL_INFEASIBLE, _unit(cert.x) * cert.x, p.x)
    return _with_measures(data, x, y, *data.split(z), st.status, st.iterations)


def _with_measures(data: QPData, x, y_eq, y_in, z_lo, z_up, status, iterations) -> QPSolution:
    """A QPSolution whose residuals and objective are measured at (x, y, z) themselves."""
    viol = jnp.concatenate([
        jnp.abs(data.A_eq @ x - data.b_eq),
        jnp.maximum(data.A_in @ x - data.b_in, 0.0),
        jnp.where(data.has_lower, jnp.maximum(data.lower - x, 0.0), 0.0),
        jnp.where(data.has_upper, jnp.maximum(x - data.upper, 0.0), 0.0),
    ])
    stationarity = data.Q @ x + data.c + data.A_eq.T @ y_eq + data.A_in.T @ y_in - z_lo + z_up
    return QPSolution(
        x=x,
        y_eq=y_eq,
        y_ineq=y_in,
        z_lower=z_lo,
        z_upper=z_up,
        status=status,
        iterations=iterations,
        primal_residual=jnp.max(viol, initial=0.0),
        dual_residual=jnp.max(jnp.abs(stationarity), initial=0.0),
        objective=0.5 * x @ (data.Q @ x) + data.c @ x,
    )
