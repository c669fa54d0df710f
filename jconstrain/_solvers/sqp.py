"""`jc.SQP`: BFGS-SQP with a steered exact penalty for nonsmooth, nonconvex problems.

The method of Curtis, Mitchell & Overton (2017) as in PyGRANSO, compiled into one loop.
Equalities, inequalities and finite bounds are stacked into c(x) with Jacobian J
(`sqp_model`); the merit is the exact penalty φ_μ = μ f + v, v the l1 violation, with
μ > 0 only ever decreasing. Each iteration, from its parts:

1. Direction (`sqp_direction`): the dual steering QP with H ≈ (∇²L)⁻¹, μ shrunk until
   the linearised violation falls enough; d = -H(μ g + Jᵀy).
2. Search (`sqp_search`): the second-order corrected unit step, else a weak Wolfe
   search on φ_μ with violation safeguards. A failed search halves μ and restarts H;
   repeated failures or negligible steps end in STALLED (`stats.stop_cause` says which:
   LINE_SEARCH, SMALL_STEP, or QP_FAILED when the QP failed and the fallback direction
   -H∇φ made no progress).
3. Hessian (`sqp_hessian`): damped BFGS of H, dense or limited memory, with
   s = x+ - x and y = (μ g+ + J+ᵀŷ) - (μ g + Jᵀŷ), ŷ the QP's dual; H restarts at I when
   a QP direction is not a descent direction or steering runs out of μ reductions.
4. Stationarity (`sqp_stationarity`): the gradient-sampling measure. Converged when it
   is <= opt_tol and the max violation <= viol_tol.

At an infeasible point that is stationary for the violation (a saddle, or a local
minimiser of it), `max_escapes` restarts at growing distance precede INFEASIBLE. The
result is the converged point, else the best feasible iterate (lowest f with violation
<= viol_tol), else the most feasible one (least scaled l1 violation, what steering
minimises).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool

from jconstrain._checks import check_count, check_range
from jconstrain._misc import first_status, inf_norm, tree_where
from jconstrain._problem import FlatProblem
from jconstrain._solution import Status, StopCause
from jconstrain._solvers import sqp_direction as direction, sqp_hessian as hessian, sqp_search, sqp_state
from jconstrain._solvers.base import AbstractSolver, Progress, Report, dtype_tol
from jconstrain._solvers.sqp_model import Model, Rows, all_finite, evaluate, prescaling, scaled, stacked_rows
from jconstrain._solvers.sqp_model import tracked_record, violations
from jconstrain._solvers.sqp_state import Direction, SQPState, initial_state, track
from jconstrain._solvers.sqp_stationarity import STATIONARITY_QP_STEPS, add_sample, first_samples, measure


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
        max_escapes: while no feasible point is found, up to this many random restarts
            from a stuck or stalled point before INFEASIBLE or STALLED, the k-th within
            min(10^(k-3), 10) max(1, ||x||_∞), each a fresh start (H = I, prescaled there
            when `prescale`: scales from a far x0 can hide a violation); the first
            feasible point after one starts afresh with μ >= mu0.
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

    @property
    def _threshold(self) -> float | None:
        return self.prescale_threshold if self.prescale else None

    def _ngrad(self, n: int) -> int:
        return self.ngrad if self.ngrad is not None else min(100, 2 * n, n + 10)

    # ---------------------------------------------------------------- init

    def init(self, problem: FlatProblem, z0: Array, args: Any, warm_start: Any) -> SQPState:
        dtype = problem.dtype
        rows = stacked_rows(problem)
        z0 = jnp.clip(z0, problem.lower, problem.upper)  # start inside the bounds
        unscaled = evaluate(problem, z0, args, jnp.ones((), dtype), jnp.ones(rows.is_eq.shape, dtype))
        if warm_start is not None:
            scale_f, scale_c = warm_start.scale_f, warm_start.scale_c
        else:
            scale_f, scale_c = prescaling(unscaled, self._threshold)
        model = scaled(unscaled, scale_f, scale_c)
        if warm_start is None:
            H, mu, iteration = hessian.identity(problem.n, dtype, self.memory), jnp.asarray(self.mu0, dtype), 0
        else:  # a warm start continues the count, so its H is not rescaled as a first update
            H, mu, iteration = warm_start.H, warm_start.mu, warm_start.iteration
        samples = first_samples(z0, model.g, self._ngrad(problem.n))
        iteration = jnp.asarray(iteration, jnp.int32)
        return initial_state(model, rows, H, mu, (scale_f, scale_c), samples, iteration, self.viol_tol)

    # ---------------------------------------------------------------- step

    def _stuck(self, state: SQPState) -> Array:
        """Stationary for the linearised violation, while infeasible, 5 times running."""
        return state.infeasible_count >= 5

    def _escape_due(self, state: SQPState) -> Array:
        """No feasible point yet, stuck or stalled, and escapes left: restart elsewhere."""
        return (self._stuck(state) | state.stalled) & ~state.has_feasible & (state.escapes < self.max_escapes)

    def step(
        self, problem: FlatProblem, state: SQPState, args: Any, active: Bool[Array, ""] | bool = True
    ) -> SQPState:
        active = jnp.asarray(active)
        restart = lambda: sqp_state.escape(problem, state, args, self.viol_tol, self.memory, self._threshold)
        return jax.lax.cond(self._escape_due(state), restart, lambda: self._sqp_step(problem, state, args, active))

    def _sqp_step(self, problem: FlatProblem, state: SQPState, args: Any, active: Bool[Array, ""]) -> SQPState:
        """One SQP iteration: direction, search, then `_accept`. With `active` False (a
        finished member of a vmapped batch, whose result is discarded) every inner loop
        stops at once."""
        rows = stacked_rows(problem)
        model, H = state.model, state.H
        v, _ = violations(model.c, rows)
        d, y, qp_ok, mu, l_ref, exhausted = direction.steer(
            model, rows, H, state.mu, v, active,
            c_viol=self.c_viol, c_mu=self.c_mu, steering_steps=self.steering_steps, viol_tol=self.viol_tol,
        )
        d, decrease = direction.descent(model, rows, H, mu, d, y, qp_ok)
        chosen = Direction(d=d, y=y, qp_ok=qp_ok, mu=mu, l_ref=l_ref, exhausted=exhausted, decrease=decrease)
        move = sqp_search.search(
            problem, args, rows, model, H, d, y, mu, v, decrease, state.scale_f, state.scale_c, active,
            c1=self.c1, c2=self.c2, viol_tol=self.viol_tol,
        )
        after = self._accept(problem, state, args, rows, v, chosen, move, active)
        return sqp_state.after_escape(state, after, self.mu0, self._threshold, self.memory)

    def _next_hessian(self, state: SQPState, chosen: Direction, new_model: Model, good: Array, n: int):
        """The BFGS update on the Lagrangian of the penalty subproblem (with the QP's dual
        y), kept only after a good step; H restarts at I when a QP direction is not a
        descent direction (definiteness lost to rounding), after a failed search (the
        quasi-Newton model no longer predicts φ: typically H has grown huge along
        directions of little curvature), or when steering ran out of μ reductions."""
        model, H, mu, y = state.model, state.H, chosen.mu, chosen.y
        s = new_model.z - model.z
        grad_lag = lambda mdl: mu * mdl.g + mdl.J.T @ y
        first = state.iteration == 0
        H_new = hessian.update(
            H, s, grad_lag(new_model) - grad_lag(model), first, self.bfgs_damping, self.curvature_damping
        )
        H_new = tree_where(good, H_new, H)
        not_descent = chosen.qp_ok & ~(chosen.decrease < 0) & jnp.any(chosen.d != 0)
        restart = not_descent | ~good | chosen.exhausted
        return tree_where(restart, hessian.identity(n, model.z.dtype, self.memory), H_new)

    def _accept(
        self, problem: FlatProblem, state: SQPState, args: Any, rows: Rows, v: Array, chosen: Direction,
        move: sqp_search.Move, active: Bool[Array, ""],
    ) -> SQPState:
        """The state after the search's move: the new model (if finite), H, μ, the
        failure counters and their cause, the gradient samples, stationarity and the
        best/most-feasible records. `v` is the l1 violation at the step's start."""
        dtype = problem.dtype
        model = state.model
        new_model = evaluate(problem, move.z, args, state.scale_f, state.scale_c)
        hit_nonfinite = move.moved & ~all_finite(new_model)
        good = move.moved & ~hit_nonfinite
        new_model = tree_where(good, new_model, model)
        H_new = self._next_hessian(state, chosen, new_model, good, problem.n)
        # A failed search halves μ (PyGRANSO's retry), and counts towards STALLED.
        mu_new = jnp.where(good, chosen.mu, 0.5 * chosen.mu)
        step_norm = inf_norm(move.z - model.z)
        tiny_step = step_norm <= self.step_tol * jnp.maximum(1.0, inf_norm(model.z))
        # Failed searches and negligible steps both count towards STALLED; the latest
        # one names the cause.
        search_failures = jnp.where(good & ~tiny_step, 0, state.search_failures + 1)
        failed_search = jnp.where(chosen.qp_ok, StopCause.LINE_SEARCH, StopCause.QP_FAILED)
        stop_cause = jnp.where(good, jnp.where(tiny_step, StopCause.SMALL_STEP, StopCause.NONE), failed_search)
        # ... or towards NONFINITE when NaN/Inf is in the way: at the accepted point, or,
        # when no real step was made, already at the unit step (backtracking from it
        # found no finite decrease).
        nan_in_way = hit_nonfinite | ((~good | tiny_step) & (chosen.decrease < 0) & ~jnp.isfinite(move.unit_phi))
        samples = add_sample(state.samples, new_model.z, new_model.g, state.iteration, good)
        stationarity, y_stat = measure(
            new_model, rows, mu_new, samples, evaldist=self.evaldist, viol_tol=self.viol_tol,
            max_iter=jnp.where(active, STATIONARITY_QP_STEPS, 0),
        )
        current = tracked_record(new_model, rows, state.scale_f, state.scale_c, stationarity, y_stat)
        feasible, best, most_feasible = track(state, current, self.viol_tol)
        # Infeasible and stationary for the linearised violation: count towards INFEASIBLE.
        stuck_infeasible = ~feasible & (chosen.l_ref <= dtype_tol(self.opt_tol, dtype) * jnp.maximum(v, 1.0))
        evaluations = move.evaluations + 1 + 2 * (chosen.decrease < 0).astype(jnp.int32)
        stalled = search_failures >= self.max_search_failures
        return SQPState(
            model=new_model, H=H_new, mu=mu_new, violation=current.violation, stationarity=stationarity,
            y_stat=y_stat, samples=samples, best=best, most_feasible=most_feasible,
            has_feasible=state.has_feasible | feasible, scale_f=state.scale_f, scale_c=state.scale_c,
            step_size=move.t, step_norm=step_norm, iteration=state.iteration + 1,
            evaluations=state.evaluations + evaluations, qp_failures=state.qp_failures + (~chosen.qp_ok).astype(jnp.int32),
            search_failures=search_failures, infeasible_count=jnp.where(stuck_infeasible, state.infeasible_count + 1, 0),
            escapes=state.escapes, nonfinite=nan_in_way & stalled, unbounded=feasible & (current.f < self.unbounded_below),
            stalled=stalled, stop_cause=stop_cause.astype(jnp.int32),
        )

    # ---------------------------------------------------------------- terminate / report

    def _converged(self, state: SQPState) -> Array:
        tol = lambda t: dtype_tol(t, state.violation.dtype)
        return (state.violation <= tol(self.viol_tol)) & (state.stationarity <= tol(self.opt_tol))

    def terminate(self, problem: FlatProblem, state: SQPState, args: Any):
        unbounded = state.unbounded | (state.has_feasible & (state.best.f < self.unbounded_below))
        # A problem on which a feasible point was found is never called infeasible.
        stuck = self._stuck(state)
        infeasible = stuck & ~state.has_feasible & (state.escapes >= self.max_escapes)
        # Stuck with a feasible point found (infeasible needs none), or stalled with no
        # escape left: STALLED.
        stalled = (state.stalled | (stuck & state.has_feasible)) & ~self._escape_due(state)
        return first_status(
            (state.nonfinite, Status.NONFINITE),
            (self._converged(state), Status.CONVERGED),
            (unbounded, Status.UNBOUNDED),
            (infeasible, Status.INFEASIBLE),
            (stalled, Status.STALLED),
        )

    def report(self, problem: FlatProblem, state: SQPState, args: Any) -> Report:
        return sqp_state.report(problem, state, stacked_rows(problem), self._converged(state))

    def progress(self, state: SQPState) -> Progress:
        f, step = state.model.f / state.scale_f, state.step_size
        return Progress(f=f, violation=state.violation, stationarity=state.stationarity, step=step, penalty=state.mu)

