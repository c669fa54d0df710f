"""`jc.SQP`: BFGS-SQP with a steered exact penalty for nonsmooth, nonconvex problems.

The method of Curtis, Mitchell & Overton (2017) as in PyGRANSO, compiled into one loop.
All constraints — equalities c_E, inequalities c_I and finite bounds (as rows
l - x <= 0, x - u <= 0) — are stacked into c ∈ R^m with Jacobian J (m x n, one
`jax.jacrev` call for all of them). The merit function is the exact penalty

    φ_μ(x) = μ f(x) + v(x),    v(x) = ||c_E(x)||_1 + ||max(c_I(x), 0)||_1,

with μ > 0 only ever decreasing. Each iteration:

1. Direction: with H ≈ the inverse Hessian (BFGS) solve the dual steering QP
       min_y ½ yᵀ(J H Jᵀ)y + (μ J H g - c)ᵀy,   y_E ∈ [-1, 1], y_I ∈ [0, 1], y_B ∈ [0, ∞),
   and set d = -H(μ g + Jᵀy); y/μ estimates the Lagrange multipliers. This is the dual
   of  min_d μ gᵀd + ½ dᵀH⁻¹d + ||c_E + J_E d||_1 + ||max(c_I + J_I d, 0)||_1  s.t. the
   (linear, hence exact) bound rows l <= x + d <= u: bounds are hard, every iterate keeps
   them. The interior-point solution is polished on its active set to machine precision.
2. Steering: if the linearised violation reduction l(d) = v - v_lin(d) is below
   c_viol·v (or d would leave a feasible point), compute the feasibility direction
   (μ = 0) with reduction l_ref, and shrink μ (by c_mu, c_mu², ...) until
   l(d) >= c_viol·l_ref (at most `steering_steps` times).
3. Line search on φ_μ along d: weak Wolfe (Lewis-Overton) with the predicted decrease
   Δ = -dᵀH⁻¹d < 0, a rounding allowance, and two safeguards: within t <= 1 the
   violation may grow to at most 100·max(1, v); expanding past t = 1 it may not exceed
   min(v, v(x + d)) (the QP step solves the linearised constraints; going further
   only overshoots them).
   A failed search halves μ; repeated failures or negligible steps end in STALLED
   (`stats.stop_cause` says which: LINE_SEARCH, SMALL_STEP, or QP_FAILED when the QP
   failed and the fallback direction -H∇φ made no progress).
4. BFGS update of H (`jconstrain._bfgs`, or limited memory with `memory=m`) with
   s = x+ - x and the difference of the Lagrangian-penalty gradients
   y = (μ g+ + J+ᵀŷ) - (μ g + Jᵀŷ), ŷ the QP's dual; H restarts at I if a QP direction is
   not a descent direction (definiteness lost to rounding). The dense update is damped
   twice: Powell's direct rule (sᵀy >= η sᵀH⁻¹s, η = `curvature_damping` = 0.2) keeps
   H from growing by more than 1/η along s where f and c are (nearly) linear along s
   (otherwise H grows without bound there and μ collapses through steering). The
   inverse rule (`bfgs_damping`) then only guards sᵀy > 0.
5. Stationarity (gradient sampling): objective gradients at recent iterates within
   `evaldist` of x and the constraint gradients at x enter the QP
       min ||G_f w + Jᵀλ||²_2   s.t. Σ w = 1, w >= 0, λ_E ∈ [-1, 1]/μ, λ_I ∈ [0, 1]/μ,
       λ_B >= 0 (active rows only; the penalty's dual box in units of μ),
   and the measure is ||G_f w + Jᵀλ||_∞ / max(1, ||g||_∞) at the QP's (w, λ) made
   feasible (w renormalised to Σ w = 1, λ clipped to its box), the relative norm of a
   Lagrangian gradient built from the Clarke-subdifferential samples. Converged when it
   is <= opt_tol and the max violation <= viol_tol.

Safeguards: if the unit step fails the Armijo test, a second-order correction (back
onto the linearised working set) is tried first (Maratos effect); H restarts at I after
a failed search or when steering runs out of μ reductions; at an infeasible point that
is stationary for the violation, up to `max_escapes` random restarts nearby precede
INFEASIBLE (first-order stationary points of the violation can be saddles).

The returned point is the converged one, else the best feasible iterate (lowest f
among those with violation <= viol_tol), else the most feasible one (least l1
violation of the scaled constraints, the measure the steering minimises).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jconstrain import qp
from jconstrain._checks import check_count, check_range
from jconstrain import _lbfgs as lbfgs
from jconstrain._bfgs import inverse_update
from jconstrain._linesearch import SearchStatus, weak_wolfe
from jconstrain._misc import first_status, inf_norm, tree_where
from jconstrain._problem import FlatProblem
from jconstrain._solution import Status, StopCause
from jconstrain._solvers.base import AbstractSolver, Progress, Report, dtype_tol, escape_point, rounding_level

STATIONARITY_QP_STEPS = 50  # interior-point steps of the stationarity QP (finished members: 0)


class Model(eqx.Module):
    """First-order information at z: f, ∇f, stacked constraints c and Jacobian J."""

    z: Float[Array, " n"]
    f: Float[Array, ""]
    g: Float[Array, " n"]
    c: Float[Array, " m"]
    J: Float[Array, "m n"]


class Rows(eqx.Module):
    """Which stacked rows are equalities, which are bounds, and which exist (infinite
    bounds do not)."""

    is_eq: Bool[Array, " m"]
    is_bound: Bool[Array, " m"]
    on: Bool[Array, " m"]
    n_general: int = eqx.field(static=True)

    def dual_box(self, dtype) -> tuple[Array, Array]:
        """Box of the steering QP's dual: [-1, 1] for equalities, [0, 1] for inequalities
        (penalised), [0, ∞) for bounds (hard: every step keeps them)."""
        lo = jnp.where(self.is_eq, -1.0, 0.0).astype(dtype)
        hi = jnp.where(self.is_bound, jnp.inf, 1.0).astype(dtype)
        return lo, hi


class Tracked(eqx.Module):
    """A remembered iterate with what the Solution reports about it.

    `violation` is the max violation of the unscaled constraints (what `Solution`
    reports); `l1_violation` the l1 violation of the scaled ones, the measure the
    method minimises while infeasible, by which the most-feasible point is chosen.
    """

    z: Float[Array, " n"]
    f: Float[Array, ""]
    violation: Float[Array, ""]
    l1_violation: Float[Array, ""]
    stationarity: Float[Array, ""]
    y: Float[Array, " m"]


def _tracked(model: Model, rows: Rows, scale_f: Array, scale_c: Array, stationarity: Array, y: Array) -> Tracked:
    """The `Tracked` record of a (scaled) model."""
    return Tracked(
        z=model.z,
        f=model.f / scale_f,
        violation=_violations(model.c / scale_c, rows)[1],
        l1_violation=_violations(model.c, rows)[0],
        stationarity=stationarity,
        y=y,
    )


class SQPState(eqx.Module):
    model: Model
    H: Float[Array, "n n"] | lbfgs.LBFGSMemory
    mu: Float[Array, ""]
    violation: Float[Array, ""]
    stationarity: Float[Array, ""]
    y_stat: Float[Array, " m"]
    samples_z: Float[Array, "L n"]
    samples_g: Float[Array, "L n"]
    samples_valid: Bool[Array, " L"]
    best: Tracked
    most_feasible: Tracked
    has_feasible: Bool[Array, ""]
    scale_f: Float[Array, ""]
    scale_c: Float[Array, " m"]
    step_size: Float[Array, ""]
    step_norm: Float[Array, ""]
    iteration: Int[Array, ""]
    evaluations: Int[Array, ""]
    qp_failures: Int[Array, ""]
    search_failures: Int[Array, ""]
    infeasible_count: Int[Array, ""]
    escapes: Int[Array, ""]
    nonfinite: Bool[Array, ""]
    unbounded: Bool[Array, ""]
    stalled: Bool[Array, ""]
    stop_cause: Int[Array, ""]  # StopCause of the latest iteration without progress


def _rows(problem: FlatProblem) -> Rows:
    m_general = problem.m_eq + problem.m_ineq
    m = m_general + (2 * problem.n if problem.has_bounds else 0)
    is_eq = np.zeros(m, bool)
    is_eq[: problem.m_eq] = True
    is_bound = np.zeros(m, bool)
    is_bound[m_general:] = True
    on = jnp.ones((m_general,), bool)
    if problem.has_bounds:
        on = jnp.concatenate([on, jnp.isfinite(problem.lower), jnp.isfinite(problem.upper)])
    return Rows(is_eq=jnp.asarray(is_eq), is_bound=jnp.asarray(is_bound), on=on, n_general=m_general)


def _general_constraints(problem: FlatProblem, z: Array, args: Any) -> Array:
    return jnp.concatenate([problem.eq(z, args), problem.ineq(z, args)])


def _bound_rows(problem: FlatProblem, z: Array) -> tuple[Array, Array]:
    """Values and Jacobian of l - z <= 0 and z - u <= 0 (value -1 where the bound is infinite)."""
    if not problem.has_bounds:
        return jnp.zeros((0,), z.dtype), jnp.zeros((0, problem.n), z.dtype)
    lower = jnp.where(jnp.isfinite(problem.lower), problem.lower - z, -1.0)
    upper = jnp.where(jnp.isfinite(problem.upper), z - problem.upper, -1.0)
    eye = jnp.eye(problem.n, dtype=z.dtype)
    J = jnp.concatenate([-eye * jnp.isfinite(problem.lower)[:, None], eye * jnp.isfinite(problem.upper)[:, None]])
    return jnp.concatenate([lower, upper]), J


def _evaluate(problem: FlatProblem, z: Array, args: Any, scale_f: Array, scale_c: Array) -> Model:
    """f, ∇f, c and J at z in one reverse-mode pass (jacrev over [f; c_general])."""

    def stacked(z):
        return jnp.concatenate([problem.objective(z, args)[None], _general_constraints(problem, z, args)])

    values, jac = stacked(z), jax.jacrev(stacked)(z)
    c_b, J_b = _bound_rows(problem, z)
    c = jnp.concatenate([values[1:], c_b]) * scale_c
    J = jnp.concatenate([jac[1:], J_b]) * scale_c[:, None]
    return Model(z=z, f=values[0] * scale_f, g=jac[0] * scale_f, c=c, J=J)


def _violations(c: Array, rows: Rows) -> tuple[Array, Array]:
    """(l1 violation v, max violation) of stacked constraint values."""
    parts = jnp.where(rows.is_eq, jnp.abs(c), jnp.maximum(c, 0)) * rows.on
    return jnp.sum(parts), jnp.max(parts, initial=0.0)


def _merit(problem: FlatProblem, z: Array, args: Any, rows: Rows, mu: Array, scale_f: Array, scale_c: Array):
    """(φ_μ(z), v(z), c(z)) of the scaled problem, from values only (no derivatives)."""
    c_b, _ = _bound_rows(problem, z)
    c = jnp.concatenate([_general_constraints(problem, z, args), c_b]) * scale_c
    v, _ = _violations(c, rows)
    return mu * problem.objective(z, args) * scale_f + v, v, c


def _finite(model: Model) -> Array:
    return (
        jnp.isfinite(model.f)
        & jnp.all(jnp.isfinite(model.g))
        & jnp.all(jnp.isfinite(model.c))
        & jnp.all(jnp.isfinite(model.J))
    )


def _polish_box_qp(M: Array, q: Array, lo: Array, hi: Array, sol: qp.QPSolution) -> Array:
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


class SQP(AbstractSolver):
    """BFGS-SQP with a steered exact penalty (see the module docstring).

    The line search takes directional derivatives with `jax.jvp`, so f and the
    constraints must support forward mode: write custom derivatives as `jax.custom_jvp`
    (which serves reverse mode too), not `jax.custom_vjp`.

    Attributes:
        opt_tol: stationarity tolerance (relative, see the module docstring).
        viol_tol: feasibility tolerance on the max violation.
        mu0: initial μ > 0, the weight of f in the merit φ = μ f + v: μ multiplies the
            objective, not the constraints, and only ever decreases (smaller μ favours
            feasibility). It plays the inverse role of `rho0` in `jc.AugmentedLagrangian`
            and `jc.Penalty`, whose ρ weights the constraints and grows.
        c_viol, c_mu: steering's required fraction of the feasibility reduction, and
            its μ shrink factor.
        steering_steps: most μ reductions per iteration.
        c1, c2: Armijo and weak Wolfe constants.
        bfgs_damping: δ of the damped BFGS update (inverse form, `jconstrain._bfgs`).
        curvature_damping: η of Powell's direct-form damping (`bfgs.curvature_damp`):
            the curvature along a step falls at most to this fraction of the model's
            (dense H only; 0 turns it off).
        evaldist: radius of the gradient-sampling neighbourhood, relative to
            max(1, ||x||_∞). PyGRANSO's 1e-4 certifies points whose objective can be
            ~1e-5 (relative) from optimal on nonsmooth problems; 1e-9 gets ~1e-8.
        ngrad: number of gradient samples (None: min(100, 2n, n + 10)).
        step_tol: a step shorter than step_tol·max(1, ||x||_∞) counts as no progress.
        prescale: scale f and each constraint by min(1, 100/||∇||_∞) at x0 (PyGRANSO's
            prescaling), and a constraint whose gradient is nonzero but below 1e-2 up to
            ||∇||_∞ = 1e-2 (at most by 1e8); reported values are always unscaled.
        unbounded_below: f below this on a feasible point reports UNBOUNDED.
        max_escapes: before INFEASIBLE is reported, up to this many random restarts near
            the stuck point (radius 1e-2, 2e-2, ... times max(1, ||x||_∞)): a first-order
            stationary point of the violation may be a saddle (e.g. where ∇c = 0).
        max_steps: cap on SQP iterations, each one QP-steered step with a line search
            (cheap: a few evaluations). ALM/Penalty count outer iterations instead, each
            a whole inner minimisation, so their defaults are much smaller.
        memory: None for the dense n x n BFGS matrix; an int m for limited-memory BFGS
            with the last m pairs (two-loop recursion, O(m n) memory), for large n.
    """

    opt_tol: float = 1e-8
    viol_tol: float = 1e-6
    mu0: float = 1.0
    c_viol: float = 0.1
    c_mu: float = 0.9
    c1: float = 1e-4
    c2: float = 0.5
    bfgs_damping: float = 1e-4
    curvature_damping: float = 0.2
    evaldist: float = 1e-9
    step_tol: float = 1e-12
    prescale: bool = eqx.field(default=True, static=True)
    prescale_threshold: float = 100.0
    unbounded_below: float = -1e20
    steering_steps: int = eqx.field(default=10, static=True)
    ngrad: int | None = eqx.field(default=None, static=True)
    max_steps: int = eqx.field(default=1000, static=True)
    max_search_failures: int = eqx.field(default=10, static=True)
    max_escapes: int = eqx.field(default=3, static=True)
    memory: int | None = eqx.field(default=None, static=True)

    penalty_label = "mu"

    def __check_init__(self):
        """Range checks of every numeric setting (concrete values only: a traced field in a
        vmapped sweep passes)."""
        where = lambda name: f"SQP.{name}"
        for name in ("opt_tol", "viol_tol", "step_tol", "evaldist"):
            check_range(where(name), getattr(self, name), 0.0)
        check_range(where("mu0"), self.mu0, 0.0, lo_open=True)
        check_range(where("prescale_threshold"), self.prescale_threshold, 0.0, lo_open=True)
        for name in ("c_viol", "c_mu", "c1"):
            check_range(where(name), getattr(self, name), 0.0, 1.0, lo_open=True, hi_open=True)
        check_range(where("c2"), self.c2, self.c1, 1.0, lo_open=True, hi_open=True)  # 0 < c1 < c2 < 1
        for name in ("bfgs_damping", "curvature_damping"):
            check_range(where(name), getattr(self, name), 0.0, 1.0, hi_open=True)
        check_range(where("unbounded_below"), self.unbounded_below, -jnp.inf, jnp.inf)
        for name in ("steering_steps", "max_steps", "max_escapes"):
            check_count(where(name), getattr(self, name), 0)
        check_count(where("max_search_failures"), self.max_search_failures, 1)
        for name in ("ngrad", "memory"):
            check_count(where(name), getattr(self, name), 1, allow_none=True)

    @property
    def steps(self) -> int:
        return self.max_steps

    def _ngrad(self, n: int) -> int:
        return self.ngrad if self.ngrad is not None else min(100, 2 * n, n + 10)

    # ---------------------------------------------------------------- init

    def init(self, problem: FlatProblem, z0: Array, args: Any, warm_start: Any) -> SQPState:
        dtype = problem.dtype
        rows = _rows(problem)
        m = rows.is_eq.shape[0]
        one = jnp.ones((), dtype)
        z0 = jnp.clip(z0, problem.lower, problem.upper)  # start inside the bounds
        unscaled = _evaluate(problem, z0, args, one, jnp.ones((m,), dtype))
        if warm_start is not None:
            scale_f, scale_c = warm_start.scale_f, warm_start.scale_c
        elif self.prescale:
            thr = jnp.asarray(self.prescale_threshold, dtype)
            norm = lambda v: jnp.max(jnp.abs(v), axis=-1, initial=0.0)
            scale_f = jnp.minimum(1.0, thr / jnp.maximum(norm(unscaled.g), 1e-300))
            row_norm = norm(unscaled.J)
            scale_c = jnp.minimum(1.0, thr / jnp.maximum(row_norm, 1e-300))
            # Rows with a tiny (nonzero) gradient are scaled up to ||∇||_∞ = 1e-2: otherwise
            # their violation, however large, looks stationary next to well-scaled rows
            # (1e-6 (x1 - 0.5) <= 0 beside 1e6-scaled equalities ended INFEASIBLE).
            tiny = (row_norm > 0) & (row_norm < 1e-2)
            scale_c = jnp.where(tiny, jnp.minimum(1e-2 / jnp.where(tiny, row_norm, 1.0), 1e8), scale_c)
            scale_f = jnp.where(jnp.isfinite(scale_f), scale_f, one)
            scale_c = jnp.where(jnp.isfinite(scale_c), scale_c, one)
        else:
            scale_f, scale_c = one, jnp.ones((m,), dtype)
        model = Model(
            z=z0, f=unscaled.f * scale_f, g=unscaled.g * scale_f, c=unscaled.c * scale_c, J=unscaled.J * scale_c[:, None]
        )
        L = self._ngrad(problem.n)
        H = self._identity(problem.n, dtype) if warm_start is None else warm_start.H
        mu = jnp.asarray(self.mu0, dtype) if warm_start is None else warm_start.mu
        samples_z = jnp.zeros((L, problem.n), dtype).at[0].set(z0)
        samples_g = jnp.zeros((L, problem.n), dtype).at[0].set(model.g)
        samples_valid = jnp.zeros((L,), bool).at[0].set(True)
        # Stationarity is first measured after a step (one QP fewer to compile).
        stationarity, y_stat = jnp.asarray(jnp.inf, dtype), jnp.zeros((m,), dtype)
        tracked = _tracked(model, rows, scale_f, scale_c, stationarity, y_stat)
        violation = tracked.violation
        feasible = violation <= dtype_tol(self.viol_tol, dtype)
        zero = jnp.asarray(0, jnp.int32)
        return SQPState(
            model=model,
            H=H,
            mu=mu,
            violation=violation,
            stationarity=stationarity,
            y_stat=y_stat,
            samples_z=samples_z,
            samples_g=samples_g,
            samples_valid=samples_valid,
            best=tracked,
            most_feasible=tracked,
            has_feasible=feasible & _finite(model),
            scale_f=scale_f,
            scale_c=scale_c,
            step_size=jnp.zeros((), dtype),
            step_norm=jnp.zeros((), dtype),
            # A warm start continues the count, so its H is not rescaled as a first update.
            iteration=zero if warm_start is None else warm_start.iteration,
            evaluations=jnp.asarray(1, jnp.int32),
            qp_failures=zero,
            search_failures=zero,
            infeasible_count=zero,
            escapes=zero,
            nonfinite=~_finite(model),
            unbounded=jnp.asarray(False),
            stalled=jnp.asarray(False),
            stop_cause=zero,
        )

    # ---------------------------------------------------------------- H: dense or limited memory

    def _identity(self, n: int, dtype) -> Array | lbfgs.LBFGSMemory:
        if self.memory is None:
            return jnp.eye(n, dtype=dtype)
        return lbfgs.init(n, self.memory, dtype)

    def _apply(self, H: Array | lbfgs.LBFGSMemory, v: Array) -> Array:
        """H v (v a vector or an n x k matrix)."""
        return H @ v if self.memory is None else lbfgs.apply(H, v)

    def _update(self, H, s: Array, y: Array, first: Array):
        if self.memory is None:
            return inverse_update(H, s, y, self.bfgs_damping, first, self.curvature_damping)[0]
        return lbfgs.update(H, s, y, self.bfgs_damping)[0]

    # ---------------------------------------------------------------- direction

    def _direction(self, model: Model, rows: Rows, H: Array, mu: Array):
        """Solve the dual steering QP for penalty μ; return (d, y, qp status)."""
        J, c = model.J, model.c
        HJt = self._apply(H, J.T)
        Hg = self._apply(H, model.g)
        M = J @ HJt
        M = 0.5 * (M + M.T)
        q = mu * (J @ Hg) - c
        # Absent rows (infinite bounds) have c = -1 and J = 0: their y is 0 at the optimum,
        # without a degenerate [0, 0] box that interior-point methods dislike.
        lo, hi = rows.dual_box(c.dtype)
        sol = qp.solve(M, q, lower=lo, upper=hi)
        y = jnp.clip(_polish_box_qp(M, q, lo, hi, sol), lo, hi) * rows.on
        d = -(mu * Hg + HJt @ y)
        usable = (sol.status == qp.QPStatus.SOLVED) | (sol.status == qp.QPStatus.MAX_ITER)
        ok = usable & jnp.all(jnp.isfinite(d))
        return d, jnp.where(ok, y, 0.0), ok

    def _linear_reduction(self, model: Model, rows: Rows, d: Array, v: Array) -> Array:
        """l(d) = v - v_lin(d): the reduction of the linearised l1 violation."""
        v_lin, _ = _violations(model.c + model.J @ d, rows)
        return v - v_lin

    def _steer(self, model: Model, rows: Rows, H: Array, mu: Array, v: Array, active):
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
        # Reductions are compared up to 1e-2·viol_tol (of the dtype) plus the rounding error
        # of the computed c (terms Σ_j |J_ij||z_j|), so violations at rounding level give no
        # reason to steer, while a step that would leave a feasible point does.
        noise = jnp.sum(rounding_level(model.c, jnp.abs(model.J) @ jnp.abs(model.z)) * rows.on)
        slack = 1e-2 * dtype_tol(self.viol_tol, dtype) + noise

        def insufficient(d, l_ref):
            return self._linear_reduction(model, rows, d, v) < self.c_viol * jnp.minimum(v, l_ref) - slack

        def cond(carry):
            k, d, y, ok, mu, mu_try, l_ref, done = carry
            return active & ~done

        def body(carry):
            k, d, y, ok, mu, mu_try, l_ref, _ = carry
            d_k, y_k, ok_k = self._direction(model, rows, H, mu_try)
            is_reference = k == 1
            l_ref = jnp.where(is_reference, self._linear_reduction(model, rows, d_k, v), l_ref)
            # The reference direction itself is never returned; keep the previous one.
            keep = is_reference
            d, y, ok = (jnp.where(keep, d, d_k), jnp.where(keep, y, y_k), jnp.where(keep, ok, ok_k))
            mu = jnp.where(keep, mu, mu_try)
            done = jnp.where(
                k == 0,
                ~may_steer | ~insufficient(d, inf),
                (k > self.steering_steps) | (~is_reference & ~insufficient(d, l_ref)),
            )
            # The k-th retry shrinks μ by c_mu^(k-1): 10 retries reach c_mu^45.
            mu_next = jnp.where(is_reference, mu * self.c_mu, mu_try * self.c_mu ** (k - 1).astype(dtype))
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
        exhausted = (k > self.steering_steps) & insufficient(d, l_ref)
        return d, y, ok, mu, l_ref, exhausted

    def _second_order_correction(self, merit, z_full, unit, model, rows, H, y, phi_target, cap, *, enabled, clip):
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
            HJt = self._apply(H, J_w.T)
            K = J_w @ HJt
            scale = jnp.maximum(jnp.max(jnp.abs(jnp.diag(K)), initial=0.0), 1.0)
            K = K + jnp.diag(jnp.where(working, 1e-12 * scale, 1.0))
            z_c = clip(z_full - HJt @ jnp.linalg.solve(K, jnp.where(working, c_full, 0.0)))
            phi_c, v_c, _ = merit(z_c)
            ok = ~full_ok & jnp.isfinite(phi_c) & (phi_c <= phi_target) & (v_c <= cap) & jnp.all(jnp.isfinite(z_c))
            return ok, jnp.where(ok, z_c, z_full)

        return jax.lax.cond(enabled, corrected, lambda: (jnp.asarray(False), z_full))

    # ---------------------------------------------------------------- stationarity

    def _radius(self, z: Array) -> Array:
        """The sampling radius evaldist·max(1, ||z||_∞), at least 10 eps of the dtype."""
        scale = jnp.maximum(1.0, inf_norm(z))
        return dtype_tol(self.evaldist, z.dtype, 10.0) * scale

    def _stationarity(self, model, rows, mu, samples_z, samples_g, samples_valid, max_iter=STATIONARITY_QP_STEPS):
        """The gradient-sampling stationarity measure and the multipliers λ = u/μ it implies
        (of the scaled constraints).

        Samples farther than the radius are replaced by the current gradient, and
        constraints that are absent or inactive (c < -viol_tol/10) get a zero column, so the
        QP has the same shape every iteration and no degenerate [0, 0] boxes.
        """
        dtype = model.f.dtype
        L = samples_g.shape[0]
        m = model.c.shape[0]
        radius = self._radius(model.z)
        near = samples_valid & (jnp.max(jnp.abs(samples_z - model.z), axis=1) <= radius)
        G = jnp.where(near[:, None], samples_g, model.g[None, :])
        # Active: within viol_tol/10 of the boundary, or within the rounding error of the
        # computed value c_i (`rounding_level` with terms ||∇c_i||_∞ ||x||_∞), below which
        # c_i < 0 is noise. (The whole viol_tol would let a constraint just short of its
        # bound certify a point off the optimum's kink; without the rounding term, an
        # active 25 - Π w whose float32 value is slightly negative would be left out and
        # the measure could never reach opt_tol.)
        active = jnp.maximum(0.1 * dtype_tol(self.viol_tol, dtype), rounding_level(model.c, jnp.max(jnp.abs(model.J), axis=1) * inf_norm(model.z)))
        used = rows.on & (rows.is_eq | (model.c >= -active))
        A = jnp.concatenate([G.T, (model.J * used[:, None]).T], axis=1)  # n x (L + m)
        # The QP in units of μ (Σ w = 1, u = λ ∈ μ⁻¹·box): its accuracy then does not
        # depend on how small μ has become.
        tiny = jnp.finfo(dtype).tiny
        lo_u, hi_u = rows.dual_box(dtype)
        inv_mu = 1.0 / jnp.maximum(mu, tiny)
        lower = jnp.concatenate([jnp.zeros((L,), dtype), lo_u * inv_mu])
        # Unused rows (zero columns) get the box [0, 1]: with [0, ∞) (bounds) their free,
        # flat direction let the interior point drift off to Inf in float32.
        upper = jnp.concatenate([jnp.full((L,), jnp.inf, dtype), jnp.where(used, hi_u * inv_mu, 1.0)])
        A_eq = jnp.concatenate([jnp.ones((1, L), dtype), jnp.zeros((1, m), dtype)], axis=1)
        zero = jnp.zeros((L + m,), dtype)
        sol = qp.solve(A.T @ A, zero, A_eq=A_eq, b_eq=jnp.ones((1,), dtype), lower=lower, upper=upper, max_iter=max_iter)
        x = jnp.clip(sol.x, lower, upper)
        # The measure is an upper bound of the true one only at a feasible (w, λ): make
        # Σ w = 1 exactly (an inexact QP, e.g. with the huge dual box of a tiny μ, can
        # return w ≈ 0 and so a spurious measure of 0).
        w = x[:L]
        total = jnp.sum(w)
        w = w / jnp.where(total > 0, total, 1.0)
        lam_all = x[L:] * used
        combination = G.T @ w + model.J.T @ lam_all
        scale = jnp.maximum(1.0, inf_norm(model.g))
        measure = inf_norm(combination) / scale
        # Any feasible (w, λ) bounds the measure from above, so the QP's last finite iterate
        # serves even when its status is not SOLVED (in float32 the interior point can break
        # down near a degenerate optimum; the iterate it returns is the last finite one).
        # Fall back to the single-sample measure (no multipliers) when there is none.
        single = inf_norm(model.g) / scale
        ok = (total > 0) & jnp.isfinite(measure)
        measure = jnp.where(ok, jnp.minimum(measure, single), single)
        measure = jnp.where(mu > 0, measure, jnp.inf)
        lam = jnp.where(ok & (measure < single), lam_all, 0.0)
        return measure, lam

    # ---------------------------------------------------------------- step

    def _track(self, state: SQPState, current: Tracked):
        """(feasible, best, most_feasible) after visiting `current`."""
        feasible = current.violation <= dtype_tol(self.viol_tol, current.f.dtype)
        better = feasible & (~state.has_feasible | (current.f < state.best.f))
        best = tree_where(better, current, state.best)
        more_feasible = (current.l1_violation < state.most_feasible.l1_violation) | (
            (current.l1_violation == state.most_feasible.l1_violation) & (current.f < state.most_feasible.f)
        )
        most_feasible = jax.tree_util.tree_map(
            lambda a, b: jnp.where(more_feasible, a, b), current, state.most_feasible
        )
        return feasible, best, most_feasible

    def _stuck(self, state: SQPState) -> Array:
        """Stationary for the linearised violation, while infeasible, 5 times running."""
        return state.infeasible_count >= 5

    def step(
        self, problem: FlatProblem, state: SQPState, args: Any, active: Bool[Array, ""] | bool = True
    ) -> SQPState:
        escape = self._stuck(state) & ~state.has_feasible & (state.escapes < self.max_escapes)
        active = jnp.asarray(active)
        return jax.lax.cond(
            escape, lambda: self._escape(problem, state, args), lambda: self._sqp_step(problem, state, args, active)
        )

    def _escape(self, problem: FlatProblem, state: SQPState, args: Any) -> SQPState:
        """Restart from a random point near a stuck infeasible iterate (H ← I): the k-th
        escape starts from `escape_point` (seeded by the iteration count). Best and
        most-feasible tracking carry on, so nothing found is lost.
        """
        dtype = problem.dtype
        rows = _rows(problem)
        z = state.model.z
        z_new = escape_point(z, state.escapes + 1, state.iteration, problem.lower, problem.upper)
        new_model = _evaluate(problem, z_new, args, state.scale_f, state.scale_c)
        finite = _finite(new_model)
        new_model = tree_where(finite, new_model, state.model)
        inf = jnp.asarray(jnp.inf, dtype)
        current = _tracked(new_model, rows, state.scale_f, state.scale_c, inf, state.y_stat * 0)
        violation = current.violation
        feasible, best, most_feasible = self._track(state, current)
        L = state.samples_valid.shape[0]
        return eqx.tree_at(
            lambda s: (
                s.model, s.H, s.violation, s.stationarity, s.y_stat, s.samples_z, s.samples_g, s.samples_valid,
                s.best, s.most_feasible, s.has_feasible, s.step_size, s.step_norm, s.iteration, s.evaluations,
                s.search_failures, s.infeasible_count, s.escapes,
            ),
            state,
            (
                new_model,
                self._identity(problem.n, dtype),
                violation,
                inf,
                current.y,
                jnp.zeros_like(state.samples_z).at[0].set(new_model.z),
                jnp.zeros_like(state.samples_g).at[0].set(new_model.g),
                jnp.zeros((L,), bool).at[0].set(True),
                best,
                most_feasible,
                state.has_feasible | feasible,
                jnp.zeros((), dtype),
                inf_norm(new_model.z - z),
                state.iteration + 1,
                state.evaluations + 1,
                jnp.zeros((), jnp.int32),
                jnp.zeros((), jnp.int32),
                state.escapes + 1,
            ),
        )

    def _sqp_step(self, problem: FlatProblem, state: SQPState, args: Any, active: Bool[Array, ""]) -> SQPState:
        """One SQP iteration; with `active` False (a finished member of a vmapped batch,
        whose result is discarded) every inner loop stops at once."""
        dtype = problem.dtype
        rows = _rows(problem)
        model, H = state.model, state.H
        v, _ = _violations(model.c, rows)
        d, y, qp_ok, mu, l_ref, steering_exhausted = self._steer(model, rows, H, state.mu, v, active)
        # Predicted decrease of φ: for the QP's d, -dᵀH⁻¹d = dᵀ(μg + Jᵀy) bounds the
        # model decrease μgᵀd + v_lin(d) - v from above and has no cancellation near a
        # solution. If the QP failed, fall back to d = -H∇φ (∇φ with the signs of c).
        signs = jnp.where(rows.is_eq, jnp.sign(model.c), (model.c > 0).astype(dtype)) * rows.on
        grad_phi = mu * model.g + model.J.T @ signs
        d_fallback = -self._apply(H, grad_phi)
        d = jnp.where(qp_ok, d, d_fallback)
        decrease = jnp.where(
            qp_ok, jnp.dot(d, mu * model.g + model.J.T @ y), jnp.dot(d_fallback, grad_phi)
        )
        decrease = jnp.where(jnp.isfinite(decrease), decrease, 0.0)
        phi0 = mu * model.f + v

        violation_cap = 100.0 * jnp.maximum(1.0, v)

        def path(t):
            """The trial point clip(z + t d) (iterates stay inside the bounds) and the
            direction of the path there (d with the clipped components zeroed)."""
            z = model.z + t * d
            if not problem.has_bounds:
                return z, d
            inside = (z >= problem.lower) & (z <= problem.upper)
            return jnp.clip(z, problem.lower, problem.upper), jnp.where(inside, d, 0.0)

        merit = lambda z: _merit(problem, z, args, rows, mu, state.scale_f, state.scale_c)
        z_unit = path(1.0)[0]
        unit = merit(z_unit)
        # Expanding past t = 1 must not raise the violation above v nor above its value
        # at the unit step: the QP step solves the linearised constraints, and going
        # further only overshoots them (e.g. a linear equality met exactly at t = 1).
        expansion_cap = jnp.minimum(v, unit[1]) + 1e-2 * self.viol_tol

        def phi_and_slope(t):
            z, direction = path(t)
            general = lambda z: jnp.concatenate(
                [problem.objective(z, args)[None], _general_constraints(problem, z, args)]
            )
            values, slopes = jax.jvp(general, (z,), (direction,))
            c_b, J_b = _bound_rows(problem, z)
            c = jnp.concatenate([values[1:], c_b]) * state.scale_c
            dc = jnp.concatenate([slopes[1:], J_b @ direction]) * state.scale_c
            f, df = values[0] * state.scale_f, slopes[0] * state.scale_f
            weights = jnp.where(rows.is_eq, jnp.sign(c), (c > 0).astype(dtype)) * rows.on
            v_t, _ = _violations(c, rows)
            # Safeguards: an exact penalty with too large μ can look unbounded below along
            # d (e.g. cubic objectives). Within the QP's unit step a trial point may raise
            # the violation up to 100·max(1, v) (as IPOPT's θ_max); expanding past t = 1
            # must not raise it above min(v, v(1)).
            cap = jnp.where(t <= 1.0, violation_cap, expansion_cap)
            phi_t = jnp.where(v_t <= cap, mu * f + v_t, jnp.inf)
            return phi_t, mu * df + jnp.dot(weights, dc)

        # Rounding allowance: a few ulps of the merit value and its parts.
        noise = 10 * jnp.finfo(dtype).eps * (mu * jnp.abs(model.f) + v)
        # Expansion stops at a step of 1e3·max(1, ||z||_∞): a merit function still
        # falling there looks unbounded below along d.
        d_norm = inf_norm(d)
        z_norm = jnp.maximum(1.0, inf_norm(model.z))
        t_max = jnp.maximum(1.0, 1e3 * z_norm / jnp.maximum(d_norm, jnp.finfo(dtype).tiny))
        if problem.has_bounds:
            # The QP keeps z + d inside the bounds; expanding stops where the box does.
            room = jnp.where(d > 0, (problem.upper - model.z) / jnp.where(d > 0, d, 1.0), jnp.inf)
            room = jnp.minimum(room, jnp.where(d < 0, (problem.lower - model.z) / jnp.where(d < 0, d, -1.0), jnp.inf))
            # Components already at their bound (room 0) stay clipped along the whole path
            # (rounding leaves tiny d there): they do not stop the expansion.
            room = jnp.where(room > 0, room, jnp.inf)
            t_max = jnp.minimum(t_max, jnp.maximum(1.0, jnp.min(room, initial=jnp.inf)))
        soc_ok, z_soc = self._second_order_correction(
            merit, z_unit, unit, model, rows, H, y, phi0 + self.c1 * decrease + noise, violation_cap,
            enabled=active & (decrease < 0), clip=lambda z: jnp.clip(z, problem.lower, problem.upper),
        )
        search = weak_wolfe(
            phi_and_slope,
            phi0,
            decrease,
            c1=self.c1,
            c2=self.c2,
            enabled=active & (decrease < 0) & ~soc_ok,
            noise=noise,
            t_max=t_max,
        )
        moved = soc_ok | (search.status == SearchStatus.WOLFE) | (search.status == SearchStatus.ARMIJO) | (
            search.status == SearchStatus.UNBOUNDED
        )
        t = jnp.where(soc_ok, 1.0, jnp.where(moved, search.t, 0.0))
        z_new = jnp.where(soc_ok, z_soc, path(t)[0])
        new_model = _evaluate(problem, z_new, args, state.scale_f, state.scale_c)
        hit_nonfinite = moved & ~_finite(new_model)
        good = moved & ~hit_nonfinite
        new_model = tree_where(good, new_model, model)
        # BFGS on the Lagrangian of the penalty subproblem, with the QP's dual y.
        s = new_model.z - model.z
        grad_lag = lambda mdl: mu * mdl.g + mdl.J.T @ y
        first = state.iteration == 0
        H_new = self._update(H, s, grad_lag(new_model) - grad_lag(model), first)
        H_new = tree_where(good, H_new, H)
        # A QP direction that is not a descent direction means H lost definiteness to
        # rounding: restart from the identity.
        # So does a failed search: the quasi-Newton model no longer predicts φ (typically
        # H has grown huge along directions of little curvature).
        restart = (qp_ok & ~(decrease < 0) & jnp.any(d != 0)) | ~good | steering_exhausted
        H_new = tree_where(restart, self._identity(problem.n, dtype), H_new)
        # A failed search halves μ (PyGRANSO's retry), and counts towards STALLED.
        mu_new = jnp.where(good, mu, 0.5 * mu)
        step_norm = inf_norm(z_new - model.z)
        tiny_step = step_norm <= self.step_tol * jnp.maximum(1.0, inf_norm(model.z))
        # Failed searches and negligible steps both count towards STALLED; the latest
        # one names the cause.
        search_failures = jnp.where(good & ~tiny_step, 0, state.search_failures + 1)
        failed_search = jnp.where(qp_ok, StopCause.LINE_SEARCH, StopCause.QP_FAILED)
        stop_cause = jnp.where(good, jnp.where(tiny_step, StopCause.SMALL_STEP, StopCause.NONE), failed_search)
        # ... or towards NONFINITE when NaN/Inf is in the way: at the accepted point, or,
        # when no real step was made, already at the unit step (backtracking from it
        # found no finite decrease).
        nan_in_way = hit_nonfinite | ((~good | tiny_step) & (decrease < 0) & ~jnp.isfinite(unit[0]))
        # Gradient samples: a ring buffer of recent iterates.
        L = state.samples_valid.shape[0]
        slot = (state.iteration + 1) % L
        samples_z = jnp.where(good, state.samples_z.at[slot].set(new_model.z), state.samples_z)
        samples_g = jnp.where(good, state.samples_g.at[slot].set(new_model.g), state.samples_g)
        samples_valid = jnp.where(good, state.samples_valid.at[slot].set(True), state.samples_valid)
        qp_steps = jnp.where(active, STATIONARITY_QP_STEPS, 0)
        stationarity, y_stat = self._stationarity(
            new_model, rows, mu_new, samples_z, samples_g, samples_valid, max_iter=qp_steps
        )
        current = _tracked(new_model, rows, state.scale_f, state.scale_c, stationarity, y_stat)
        violation, f_unscaled = current.violation, current.f
        feasible, best, most_feasible = self._track(state, current)
        # Infeasible and stationary for the linearised violation: count towards INFEASIBLE.
        stuck_infeasible = ~feasible & (l_ref <= dtype_tol(self.opt_tol, dtype) * jnp.maximum(v, 1.0))
        return SQPState(
            model=new_model,
            H=H_new,
            mu=mu_new,
            violation=violation,
            stationarity=stationarity,
            y_stat=y_stat,
            samples_z=samples_z,
            samples_g=samples_g,
            samples_valid=samples_valid,
            best=best,
            most_feasible=most_feasible,
            has_feasible=state.has_feasible | feasible,
            scale_f=state.scale_f,
            scale_c=state.scale_c,
            step_size=t,
            step_norm=step_norm,
            iteration=state.iteration + 1,
            evaluations=state.evaluations + search.evaluations + 1 + 2 * (decrease < 0).astype(jnp.int32),
            qp_failures=state.qp_failures + (~qp_ok).astype(jnp.int32),
            search_failures=search_failures,
            infeasible_count=jnp.where(stuck_infeasible, state.infeasible_count + 1, 0),
            escapes=state.escapes,
            nonfinite=nan_in_way & (search_failures >= self.max_search_failures),
            unbounded=feasible & (f_unscaled < self.unbounded_below),
            stalled=search_failures >= self.max_search_failures,
            stop_cause=stop_cause.astype(jnp.int32),
        )

    # ---------------------------------------------------------------- terminate / report

    def terminate(self, problem: FlatProblem, state: SQPState, args: Any):
        dtype = problem.dtype
        feasible = state.violation <= dtype_tol(self.viol_tol, dtype)
        converged = feasible & (state.stationarity <= dtype_tol(self.opt_tol, dtype))
        unbounded = state.unbounded | (state.has_feasible & (state.best.f < self.unbounded_below))
        # A problem on which a feasible point was found is never called infeasible.
        stuck = self._stuck(state)
        infeasible = stuck & ~state.has_feasible & (state.escapes >= self.max_escapes)
        # Stuck with a feasible point found (infeasible needs none): STALLED.
        return first_status(
            (state.nonfinite, Status.NONFINITE),
            (converged, Status.CONVERGED),
            (unbounded, Status.UNBOUNDED),
            (infeasible, Status.INFEASIBLE),
            (state.stalled | (stuck & state.has_feasible), Status.STALLED),
        )

    def report(self, problem: FlatProblem, state: SQPState, args: Any) -> Report:
        dtype = problem.dtype
        converged = (state.violation <= dtype_tol(self.viol_tol, dtype)) & (
            state.stationarity <= dtype_tol(self.opt_tol, dtype)
        )
        current = _tracked(state.model, _rows(problem), state.scale_f, state.scale_c, state.stationarity, state.y_stat)
        pick = lambda a, b, c: jnp.where(converged, a, jnp.where(state.has_feasible, b, c))
        chosen = jax.tree_util.tree_map(pick, current, state.best, state.most_feasible)
        # Multipliers of the scaled problem, unscaled: λ = λ_s scale_c / scale_f.
        lam = chosen.y * state.scale_c / state.scale_f
        me, mi, n = problem.m_eq, problem.m_ineq, problem.n
        zeros = jnp.zeros((n,), dtype)
        z_lower = lam[me + mi : me + mi + n] if problem.has_bounds else zeros
        z_upper = lam[me + mi + n :] if problem.has_bounds else zeros
        return Report(
            z=chosen.z,
            f=chosen.f,
            y_eq=lam[:me],
            y_ineq=lam[me : me + mi],
            z_lower=z_lower,
            z_upper=z_upper,
            stationarity=chosen.stationarity,
            violation=chosen.violation,
            evaluations=state.evaluations,
            inner_iterations=state.iteration,
            stop_cause=jnp.where(state.stalled, state.stop_cause, StopCause.VIOLATION_STATIONARY),
        )

    def progress(self, state: SQPState) -> Progress:
        return Progress(
            f=state.model.f / state.scale_f,
            violation=state.violation,
            stationarity=state.stationarity,
            step=state.step_size,
            penalty=state.mu,
        )

