"""A homogeneous self-dual primal-dual interior-point method for convex QPs.

Write the QP (after Ruiz scaling, see `_scaling`) as

    minimise 1/2 x^T Q x + c^T x   s.t.   A x = b,   G x + s = h,  s >= 0,

with multipliers y (free) for A x = b and z >= 0 for the cone rows (`_data`: the
inequalities and the finite bounds). Following Clarabel (Goulart & Chen, 2024), which
extends the self-dual embedding of Xu, Hung & Ye (1996) and Andersen et al. (2003) to
quadratic objectives, we look for (x, y, z, s, tau, kappa) with s, z, tau, kappa >= 0,

    r_x   = Q x + A^T y + G^T z + c tau                   = 0
    r_y   = A x - b tau                                   = 0
    r_z   = G x + s - h tau                               = 0
    r_tau = kappa + c^T x + b^T y + h^T z + x^T Q x / tau = 0
    s o z = 0,   tau kappa = 0.

A solution has tau > 0 (then (x, y, z, s) / tau is optimal) or kappa > 0 (then (y, z)
is a Farkas certificate of primal infeasibility if b^T y + h^T z < 0, and x a direction
of unboundedness if c^T x < 0). Infeasibility is thus detected from the same iterates,
at the same speed as optimality and without a phase one. We chose this embedding over an
infeasible-start IPM with OSQP-style certificate checks on diverging iterates (which we
did not implement) because the embedding's certificates are limits of bounded iterates;
tests/test_qp.py compares its infeasible/unbounded verdicts with linprog's.

Each iteration is Mehrotra's predictor-corrector: with mu = (s^T z + tau kappa)/(m + 1),
the predictor solves the Newton system for r -> 0, s o z -> 0 (eta = 1, d_s = s o z,
d_kappa = tau kappa); its step length alpha_a gives sigma = (1 - alpha_a)^3, and the
corrector targets residuals (1 - sigma) r and s o z -> sigma mu with the second-order
term (eta = 1 - sigma, d_s = s o z + ds_a o dz_a - sigma mu). The linearisation, with
dkappa = -(d_kappa + kappa dtau) / tau and ds = -eta r_z - G dx + h dtau eliminated, is
the bordered system of `_kkt`; one LU factorisation serves both solves. The step is
0.99 of the largest one keeping s, z, tau, kappa >= 0. Masked rows (infinite bounds)
carry s = 1, z = 0 and never move.

Termination, on the point (x, y, z, s) / tau mapped back to the user's units, with
every residual measured against the largest term it is made of (floor tol^2, which only
matters when the data vanish), so that tiny data are solved to relative accuracy:

    |r_p|_inf <= tol max(|b|, |h|, |A x|, |G x|)
    |r_d|_inf <= tol max(|c|, |Q x|, |A^T y|, |A_ineq^T z_in|, |z_lower|, |z_upper|)
    s^T z     <= tol max(|primal objective|, |dual objective|, |c^T x|, |b^T y + h^T z|).

Infeasibility, in scaled units (|A|, |G| ~ 1 after equilibration), once kappa > tau and
with tol_inf = max(tol, sqrt(eps)):

    primal: b^T y + h^T z < 0,  |A^T y + G^T z|_inf |(b, h)|_inf <= tol_inf |b^T y + h^T z|
    dual:   c^T x < 0,  |Q x|_inf <= tol_inf |c^T x|,
            |A x|_inf, |max(G x, 0)|_inf <= tol_inf |c^T x| / |c|_inf.

The run also stops (MAX_ITER) when mu has not fallen for 5 steps: rounding errors then
dominate, e.g. on problems that are infeasible or feasible only within ~1e-9.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jconstrain.qp._data import QPData
from jconstrain.qp._kkt import initial_solve, newton_solver
from jconstrain.qp._scaling import Scaling
from jconstrain.qp._status import QPStatus

RUNNING = -1
MAX_STALLS = 5
_STEP_FRACTION = 0.99
_INITIAL_REGULARISATION = 1.0  # 1 and 1e-5 gave the same iteration counts; 1 keeps x0 bounded


class IPMState(eqx.Module):
    """An iterate of the homogeneous embedding, in scaled units."""

    x: Float[Array, " n"]
    y: Float[Array, " m_eq"]
    z: Float[Array, " m_c"]
    s: Float[Array, " m_c"]
    tau: Float[Array, ""]
    kappa: Float[Array, ""]
    iterations: Int[Array, ""]
    status: Int[Array, ""]
    best_progress: Float[Array, ""]  # the smallest mu seen so far
    stalls: Int[Array, ""]  # steps since mu last fell below 0.999 best_progress


class Residuals(eqx.Module):
    r_x: Float[Array, " n"]
    r_y: Float[Array, " m_eq"]
    r_z: Float[Array, " m_c"]
    r_tau: Float[Array, ""]


class Direction(eqx.Module):
    dx: Float[Array, " n"]
    dy: Float[Array, " m_eq"]
    dz: Float[Array, " m_c"]
    ds: Float[Array, " m_c"]
    dtau: Float[Array, ""]
    dkappa: Float[Array, ""]


def _inf_norm(*vs: Array) -> Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(v), initial=0.0) for v in vs]))


def residuals(data: QPData, st: IPMState) -> Residuals:
    """The residuals of the embedding (module docstring)."""
    Qx = data.Q @ st.x
    return Residuals(
        r_x=Qx + data.A_eq.T @ st.y + data.GT_mv(st.z) + data.c * st.tau,
        r_y=data.A_eq @ st.x - data.b_eq * st.tau,
        r_z=data.mask * (data.G_mv(st.x) + st.s - data.h * st.tau),
        r_tau=st.kappa + data.c @ st.x + data.b_eq @ st.y + data.h @ st.z + st.x @ Qx / st.tau,
    )


def _mu(data: QPData, st: IPMState) -> Array:
    return (st.s @ (data.mask * st.z) + st.tau * st.kappa) / (jnp.sum(data.mask) + 1)


def _max_step(v: Array, dv: Array, mask: Array) -> Array:
    """The largest alpha in [0, 1] with v + alpha dv >= 0 on the rows where mask is 1."""
    ratio = jnp.where((mask > 0) & (dv < 0), -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
    return jnp.minimum(1.0, jnp.min(ratio, initial=jnp.inf))


def _step_length(data: QPData, st: IPMState, d: Direction) -> Array:
    one = jnp.ones((), st.tau.dtype)
    return jnp.minimum(
        jnp.minimum(_max_step(st.s, d.ds, data.mask), _max_step(st.z, d.dz, data.mask)),
        jnp.minimum(_max_step(st.tau, d.dtau, one), _max_step(st.kappa, d.dkappa, one)),
    )


def _direction(data: QPData, st: IPMState, res: Residuals, solve, eta, d_s, d_kappa) -> Direction:
    """Solve the linearised embedding for residual factor eta and complementarity targets."""
    z_safe = jnp.where(data.mask > 0, st.z, 1.0)
    dx, dy, dz, dtau = solve(
        -eta * res.r_x,
        -eta * res.r_y,
        data.mask * (-eta * res.r_z + d_s / z_safe),
        -eta * res.r_tau + d_kappa / st.tau,
    )
    ds = data.mask * (-eta * res.r_z - data.G_mv(dx) + data.h * dtau)
    dkappa = -(d_kappa + st.kappa * dtau) / st.tau
    return Direction(dx, dy, dz, ds, dtau, dkappa)


def step(data: QPData, st: IPMState) -> IPMState:
    """One Mehrotra predictor-corrector step of the embedding (module docstring).

    Both directions come from one formula: given the predictor (ds_a, dz_a, dtau_a,
    dkappa_a) and sigma, solve with eta = 1 - sigma, d_s = s o z + ds_a o dz_a - sigma mu,
    d_kappa = tau kappa + dtau_a dkappa_a - sigma mu. With a zero "predictor" and
    sigma = 0 this is the predictor itself, so a two-pass loop gives the corrector.
    """
    mask = data.mask
    res = residuals(data, st)
    solve = newton_solver(data, st.x, st.z, st.s, st.tau, st.kappa)
    sz, tk, mu = mask * st.s * st.z, st.tau * st.kappa, _mu(data, st)

    def corrected(i, aff: Direction) -> Direction:
        sigma = jnp.where(i == 0, 0.0, (1.0 - _step_length(data, st, aff)) ** 3)
        d_s = sz + mask * (aff.ds * aff.dz - sigma * mu)
        d_kappa = tk + aff.dtau * aff.dkappa - sigma * mu
        return _direction(data, st, res, solve, 1.0 - sigma, d_s, d_kappa)

    zero = Direction(*(jnp.zeros_like(v) for v in (st.x, st.y, st.z, st.s, st.tau, st.kappa)))
    d = jax.lax.fori_loop(0, 2, corrected, zero)
    alpha = _STEP_FRACTION * _step_length(data, st, d)
    return IPMState(
        x=st.x + alpha * d.dx,
        y=st.y + alpha * d.dy,
        z=st.z + alpha * d.dz,
        s=st.s + alpha * d.ds,
        tau=st.tau + alpha * d.dtau,
        kappa=st.kappa + alpha * d.dkappa,
        iterations=st.iterations + 1,
        status=st.status,
        best_progress=st.best_progress,
        stalls=st.stalls,
    )


def _shift_into_cone(v: Array, mask: Array) -> Array:
    """CVXOPT's shift: v + (1 + max(0, -min v)) on the masked rows when some v_i <= 0."""
    worst = -jnp.min(jnp.where(mask > 0, v, jnp.inf), initial=jnp.inf)
    shift = jnp.where(worst >= 0, 1.0 + worst, 0.0)
    return jnp.where(mask > 0, v + shift, 1.0)


def cold_start(data: QPData) -> IPMState:
    """CVXOPT/Clarabel start: x, y from `kkt.initial_solve`, s = h - G x, z = -s, then
    both shifted into the cone; tau = kappa = 1."""
    mask = data.mask
    x, y = initial_solve(data, _INITIAL_REGULARISATION)
    s = mask * (data.h - data.G_mv(x))
    one = jnp.ones((), x.dtype)
    return IPMState(
        x=x,
        y=y,
        z=mask * _shift_into_cone(-s, mask),
        s=_shift_into_cone(s, mask),
        tau=one,
        kappa=one,
        iterations=jnp.zeros((), jnp.int32),
        status=jnp.full((), RUNNING, jnp.int32),
        best_progress=jnp.full((), jnp.inf, x.dtype),
        stalls=jnp.zeros((), jnp.int32),
    )


# ------------------------------------------------------------------------ termination


class Unscaled(eqx.Module):
    """The iterate divided by tau and mapped back to the user's units."""

    x: Float[Array, " n"]
    y: Float[Array, " m_eq"]
    z: Float[Array, " m_c"]
    s: Float[Array, " m_c"]


def unscale(scaling: Scaling, st: IPMState, tau: Array | None = None) -> Unscaled:
    """(x, y, z, s) / tau in the user's units (tau=1 maps a certificate without dividing)."""
    tau = st.tau if tau is None else tau
    k = scaling.cone_scale
    return Unscaled(
        x=scaling.d * st.x / tau,
        y=scaling.e_eq * st.y / (tau * scaling.cost),
        z=k * st.z / (tau * scaling.cost),
        s=st.s / (k * tau),
    )


def optimality(data: QPData, p: Unscaled, tol) -> Array:
    """True when the unscaled point satisfies the KKT conditions to relative `tol`.

    Each residual is measured against the largest term it is made of (data and
    iterate), never against a constant, so that tiny data (an SQP step near
    convergence) are solved to relative accuracy; tol^2 is the absolute floor, which
    only matters for data that vanish altogether (then x = 0).
    """
    mask = data.mask
    z = mask * p.z
    z_in, z_lo, z_up = data.split(z)
    Qx, Ax, Gx = data.Q @ p.x, data.A_eq @ p.x, mask * data.G_mv(p.x)
    ATy, ATz_in = data.A_eq.T @ p.y, data.A_in.T @ z_in
    hz = data.b_eq @ p.y + data.h @ z
    r_p = _inf_norm(Ax - data.b_eq, mask * (Gx + p.s - data.h))
    r_d = _inf_norm(Qx + ATy + ATz_in - z_lo + z_up + data.c)
    gap = jnp.abs(p.s @ z)
    xQx, cx = p.x @ Qx, data.c @ p.x
    floor = tol * tol
    ok_p = r_p <= tol * jnp.maximum(floor, _inf_norm(data.b_eq, mask * data.h, Ax, Gx))
    ok_d = r_d <= tol * jnp.maximum(floor, _inf_norm(data.c, Qx, ATy, ATz_in, z_lo, z_up))
    ok_gap = gap <= tol * jnp.maximum(floor, _inf_norm(0.5 * xQx + cx, 0.5 * xQx + hz, cx, hz))
    return ok_p & ok_d & ok_gap


def primal_infeasible(data: QPData, st: IPMState, tol) -> Array:
    """(y, z) certifies infeasibility: b^T y + h^T z < 0 and

        |A^T y + G^T z|_inf |(b, h)|_inf <= tol |b^T y + h^T z|

    (scaled units, where |A|, |G| ~ 1: no feasible point within 1/tol times the size of
    the right-hand sides), once kappa > tau.
    """
    hz = data.b_eq @ st.y + data.h @ (data.mask * st.z)
    ATz = _inf_norm(data.A_eq.T @ st.y + data.GT_mv(data.mask * st.z))
    size = _inf_norm(data.b_eq, data.mask * data.h)
    return (st.kappa > st.tau) & (hz < 0) & (ATz * size <= -tol * hz)


def dual_infeasible(data: QPData, st: IPMState, tol) -> Array:
    """x is a direction of unbounded descent: c^T x < 0, |Q x|_inf <= tol |c^T x| and

        |A x|_inf, |max(G x, 0)|_inf <= tol |c^T x| / |c|_inf

    (scaled units), once kappa > tau.
    """
    cx = data.c @ st.x
    recession = _inf_norm(data.A_eq @ st.x, data.mask * jnp.maximum(data.G_mv(st.x), 0.0))
    c_size = _inf_norm(data.c)
    flat = _inf_norm(data.Q @ st.x) <= -tol * cx
    return (st.kappa > st.tau) & (cx < 0) & flat & (recession * c_size <= -tol * cx)


def _is_finite(st: IPMState) -> Array:
    leaves = (st.x, st.y, st.z, st.s, st.tau, st.kappa)
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in leaves]))


def check(data: QPData, sdata: QPData, scaling: Scaling, st: IPMState, tol, tol_inf) -> IPMState:
    """Set `st.status` from the tests in the module docstring (it stays RUNNING otherwise)."""
    status = jnp.where(
        optimality(data, unscale(scaling, st), tol),
        QPStatus.SOLVED,
        jnp.where(
            primal_infeasible(sdata, st, tol_inf),
            QPStatus.PRIMAL_INFEASIBLE,
            jnp.where(dual_infeasible(sdata, st, tol_inf), QPStatus.DUAL_INFEASIBLE, RUNNING),
        ),
    )
    status = jnp.where(_is_finite(st), status, QPStatus.NONFINITE)
    status = jnp.where(st.status == RUNNING, status, st.status).astype(jnp.int32)
    return eqx.tree_at(lambda s: s.status, st, status)


def _record_progress(data: QPData, st: IPMState) -> IPMState:
    """Count the steps since mu last fell below 0.999 times its best value. Every mode of
    convergence (to an optimum, or with tau -> 0 to a certificate) drives mu to 0
    geometrically; it freezes when rounding errors dominate."""
    mu = _mu(data, st)
    stalls = jnp.where(mu < 0.999 * st.best_progress, 0, st.stalls + 1)
    return eqx.tree_at(lambda s: (s.best_progress, s.stalls), st, (jnp.minimum(mu, st.best_progress), stalls))


def iterate(data: QPData, sdata: QPData, scaling: Scaling, st: IPMState, max_iter, tol, tol_inf) -> IPMState:
    """Check, then step while RUNNING. Stops with MAX_ITER after `max_iter` steps, or
    when mu has not improved for MAX_STALLS steps (rounding errors dominate);
    a step that produces a non-finite iterate is undone and the status is NONFINITE.
    """

    def body(st: IPMState) -> IPMState:
        st = check(data, sdata, scaling, st, tol, tol_inf)
        out = (st.status == RUNNING) & ((st.iterations >= max_iter) | (st.stalls >= MAX_STALLS))
        st = eqx.tree_at(lambda s: s.status, st, jnp.where(out, QPStatus.MAX_ITER, st.status).astype(jnp.int32))

        def guarded_step(st: IPMState) -> IPMState:
            new = _record_progress(sdata, step(sdata, st))
            failed = eqx.tree_at(lambda s: s.status, st, jnp.int32(QPStatus.NONFINITE))
            return jax.lax.cond(_is_finite(new), lambda: new, lambda: failed)

        return jax.lax.cond(st.status == RUNNING, guarded_step, lambda st: st, st)

    return jax.lax.while_loop(lambda st: st.status == RUNNING, body, st)


# ------------------------------------------------------------------------ warm start

_WARM_CUTOFF = 3e-3


def warm_lambda(ratio: Array) -> Array:
    """The weight of the previous solution given merit(prev) / merit(cold) (see `warm_start`)."""
    return jnp.where(ratio <= _WARM_CUTOFF, jnp.clip(1.0 - jnp.sqrt(ratio), 0.0, 0.999), 0.0)


def _previous_point(data: QPData, scaling: Scaling, ws) -> IPMState:
    """A previous `QPSolution` in scaled units, with s = max(h - G x, 0), z >= 0, tau = 1, kappa = 0."""
    mask = data.mask
    x = ws.x / scaling.d
    z = jnp.concatenate([ws.y_ineq, ws.z_lower, ws.z_upper]) * scaling.cost / scaling.cone_scale
    return IPMState(
        x=x,
        y=ws.y_eq * scaling.cost / scaling.e_eq,
        z=mask * jnp.maximum(z, 0.0),
        s=jnp.where(mask > 0, jnp.maximum(data.h - data.G_mv(x), 0.0), 1.0),
        tau=jnp.ones((), x.dtype),
        kappa=jnp.zeros((), x.dtype),
        iterations=jnp.zeros((), jnp.int32),
        status=jnp.full((), RUNNING, jnp.int32),
        best_progress=jnp.full((), jnp.inf, x.dtype),
        stalls=jnp.zeros((), jnp.int32),
    )


def warm_start(data: QPData, scaling: Scaling, ws, cold: IPMState) -> IPMState:
    """Skajaa, Andersen & Ye's (2013) warm start: lambda v_prev + (1 - lambda) v_cold.

    Mixing in the well-centred cold start keeps s_i z_i >= (1 - lambda)^2 s0_i z0_i, so
    the warm point is never badly centred. With r = merit(v_prev) / merit(v_cold),
    lambda = min(1 - sqrt(r), 0.999) when r <= 3e-3, else 0 (a cold start); a previous
    solution that is not finite is ignored. Near-identical data then start close to the
    answer, while data far from the previous QP's fall back to (about) the cold start
    rather than a badly centred point.
    """
    prev = _previous_point(data, scaling, ws)
    ratio = merit(data, prev) / merit(data, cold)
    lam = jnp.where(_is_finite(prev) & jnp.isfinite(ratio), warm_lambda(ratio), 0.0)
    prev = jax.tree_util.tree_map(lambda v: jnp.where(jnp.isfinite(v), v, 0.0), prev)
    mix = lambda p, c: lam * p + (1 - lam) * c
    return eqx.tree_at(
        lambda s: (s.x, s.y, s.z, s.s, s.kappa),
        cold,
        tuple(mix(getattr(prev, k), getattr(cold, k)) for k in ("x", "y", "z", "s", "kappa")),
    )


def merit(data: QPData, st: IPMState) -> Array:
    """max(|r_x| / (1 + |c|), |(r_y, r_z)| / (1 + |(b, h)|), |r_tau|, mu), all over tau (scaled units)."""
    res = residuals(data, st)
    dual = _inf_norm(res.r_x) / (1.0 + _inf_norm(data.c))
    primal = _inf_norm(res.r_y, res.r_z) / (1.0 + _inf_norm(data.b_eq, data.mask * data.h))
    return jnp.maximum(jnp.maximum(dual, primal), jnp.maximum(jnp.abs(res.r_tau), _mu(data, st))) / st.tau
