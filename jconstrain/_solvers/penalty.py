"""`jc.Penalty`: the quadratic penalty method with continuation.

    P_ρ(x) = f(x) + ρ/2 (||c_E(x)||² + ||max(c_I(x), 0)||²)

Each outer step minimises P_ρ from the current point with an optax optimiser (L-BFGS
by default), then, while the violation V exceeds `viol_tol`, multiplies ρ by
min(rho_growth, 4 V / viol_tol): the violation of a minimiser of P_ρ falls like |λ|/ρ, so
near the tolerance ρ grows only as far as that law needs to land at viol_tol / 4, not by a
full `rho_growth` into needless ill-conditioning (at ρ ~ 1e10 rounding in ρ c alone can
hold ||∇P_ρ|| above opt_tol: a random QP with |λ| = 11 and viol_tol = 1e-8 stalled there).
The margin keeps f accurate too: its error is about |λ| V.
Bounds are treated as inequality constraints l - x <= 0, x - u <= 0.

At a minimiser of P_ρ the multiplier estimates are λ = ρ c_E, ν = ρ max(c_I, 0); the
stationarity measure is ||∇_x L||_∞ / max(1, ||∇f||_∞) = ||∇P_ρ||_∞ / max(1, ||∇f||_∞).

Statuses: CONVERGED when feasible (viol_tol) and stationary (opt_tol); INFEASIBLE at
ρ = rho_max when x is infeasible and stationary for the violation w = (c_E, max(c_I, 0))
to opt_tol (`violation_stationarity`, free of constant constraint scaling; at a
minimiser of P_ρ, Jᵀw = -∇f/ρ): x is then a least-violation point of ½||w||² (bounds
counted as soft rows); UNBOUNDED when f < `unbounded_below` at a
feasible point, or when P_ρ still runs below it at ρ = rho_max; NONFINITE when NaN/Inf
leave no finite way on at ρ = rho_max; STALLED when nothing can change (e.g. at ρ_max
with a constraint scaled so small that ρ_max cannot enforce it); else MAX_STEPS.

An inner run that meets NaN/Inf stops at its last finite point, which is kept, and ρ
grows. A subproblem whose P_ρ runs below `unbounded_below` at an infeasible point (ρ too
small to hold f), or whose end point has non-finite values, is rejected: x stays and ρ
grows.
The violation falls like O(1/ρ): reaching 1e-6 takes ρ of order 1e6 × |λ|, so the
subproblems grow ill-conditioned; prefer `jc.AugmentedLagrangian` or `jc.SQP` for
high accuracy.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int

from jconstrain import formulations
from jconstrain._checks import check_count, check_range
from jconstrain._inner import NONFINITE_BACKTRACKS, default_optimizer, minimise
from jconstrain._problem import (
    FlatProblem,
    inequalities_with_bounds,
    linearise,
    max_violation,
    split_bound_multipliers,
)
from jconstrain._solution import Status
from jconstrain._solvers.base import AbstractSolver, Progress, Report, dtype_tol, rounding_level


class PenaltyState(eqx.Module):
    z: Float[Array, " n"]
    f: Float[Array, ""]
    c_eq: Float[Array, " me"]
    c_ineq: Float[Array, " mb"]
    rho: Float[Array, ""]  # the penalty of the next subproblem
    rho_z: Float[Array, ""]  # the penalty of the subproblem z minimises (scales the multipliers)
    violation: Float[Array, ""]
    stationarity: Float[Array, ""]
    violation_stationarity: Float[Array, ""]
    row_scales: Float[Array, " m"]  # `constraint_scales` at x0
    floors: "RoundingFloors"  # what rounding lets z certify (`rounding_floors`)
    step_norm: Float[Array, ""]
    evaluations: Int[Array, ""]
    inner_iterations: Int[Array, ""]
    nonfinite: Bool[Array, ""]
    diverged: Bool[Array, ""]
    stalled: Bool[Array, ""]


def constraint_scales(problem: FlatProblem, z: Float[Array, " n"], args: Any) -> Float[Array, " m"]:
    """r_i = ||∇c_i(z)||_∞ for every row of (c_E, c_I with bounds) (`linearise`'s rows),
    1 where that is 0 or not finite, and 1 for bound rows (unit gradients). One VJP per
    general constraint, in sequence (O(n) memory); computed once, at x0."""
    general = lambda z: jnp.concatenate([problem.eq(z, args), problem.ineq(z, args)])
    _, vjp = jax.vjp(general, z)
    m = problem.m_eq + problem.m_ineq
    row = lambda i: jnp.max(jnp.abs(vjp(jax.nn.one_hot(i, m, dtype=z.dtype))[0]), initial=0.0)
    r = jax.lax.map(row, jnp.arange(m)) if m else jnp.zeros((0,), z.dtype)
    r = jnp.where(jnp.isfinite(r) & (r > 0), r, 1.0).astype(z.dtype)
    n_bound_rows = inequalities_with_bounds(problem, z, args).shape[0] - problem.m_ineq
    return jnp.concatenate([r, jnp.ones((n_bound_rows,), z.dtype)])


def violation_stationarity(
    vjp: Callable, c_eq: Float[Array, " me"], c_ineq: Float[Array, " mi"], scales: Float[Array, " m"]
) -> Float[Array, ""]:
    """How far x is from stationary for the violation, free of the constraints' scale:
    min(σ, F) with, for w = (c_E, max(c_I, 0)) and J the rows' Jacobian,

        σ = ||Jᵀw||_∞ / max_j ||Jᵀ(s_j ∘ w)||_∞              (the violated rows cancel)
        F = max_j ||Jᵀ(s_j ∘ w / r²)||_∞ / ||w / r||_∞        (the violated rows are flat)

    Jᵀw = ∇(½||w||²) is what penalty methods drive to 0 at an infeasible problem;
    s_0 = 1 and s_j (j >= 1) = ±1 by bit j-1 of the row index, so max_j ||Jᵀ(s_j ∘ w)|| is
    the size of the violated rows' gradients with their cancellation broken up (any two
    rows differ in some bit: two disjoint balls pulling x apart cancel in Jᵀw, not in
    every probe). r = `constraint_scales` at x0, so F is the violated rows' gradient size
    relative to their own size at x0 (for one row, ||∇c(x)||_∞ / ||∇c(x0)||_∞): x² + 1 <= 0
    at x = 0 is flat (F = 0), while a constraint merely scaled by 1e-6 is neither flat nor
    cancelled (σ = F = 1). One batched VJP of 2 (1 + ceil(log2 m)) probes.
    """
    w_ineq = jnp.maximum(c_ineq, 0)  # 0 on absent rows (c = -inf)
    m_eq, m = c_eq.shape[0], c_eq.shape[0] + c_ineq.shape[0]
    dtype = c_eq.dtype
    if m == 0:
        return jnp.zeros((), dtype)
    rows = np.arange(m)
    signs = [np.ones(m)] + [1.0 - 2.0 * ((rows >> j) & 1) for j in range(max(1, (m - 1).bit_length()))]
    signs = jnp.asarray(np.stack(signs), dtype)
    w = jnp.concatenate([c_eq, w_ineq])
    cotangents = jnp.concatenate([signs * w, signs * w / scales**2])
    zero = jnp.zeros((), dtype)
    probe = lambda v: vjp((zero, v[:m_eq], v[m_eq:]))[0]
    sizes = jnp.max(jnp.abs(jax.vmap(probe)(cotangents)), axis=1, initial=0.0)
    k = signs.shape[0]
    tiny = jnp.finfo(dtype).tiny
    sigma = sizes[0] / jnp.maximum(jnp.max(sizes[:k]), tiny)
    flat = jnp.max(sizes[k:]) / jnp.maximum(jnp.max(jnp.abs(w / scales), initial=0.0), tiny)
    return jnp.minimum(sigma, flat)


class RoundingFloors(eqx.Module):
    """What rounding lets a penalty-type method resolve at z (`rounding_floors`)."""

    violation: Float[Array, ""]
    stationarity: Float[Array, ""]


def rounding_floors(
    c_eq: Float[Array, " me"],
    c_ineq: Float[Array, " mb"],
    scales: Float[Array, " m"],
    z: Float[Array, " n"],
    rho: Float[Array, ""],
    from_values: Bool[Array, " m"],
    grad_scale: Float[Array, ""],
) -> RoundingFloors:
    """The violation and stationarity that rounding lets these methods certify.

    With δ_i = `rounding_level`(c_i) (row sizes r = `constraint_scales` at x0):

        violation floor     max_i δ_i
        stationarity floor  ρ Σ_{i ∈ from_values} δ_i r_i / max(1, ||∇f||_∞)

    A multiplier computed from the constraint's value (ρ c_i, or λ̄_i + ρ c_i) carries
    the error ρ δ_i, which enters ∇L = ∇f + Jᵀλ times ||∇c_i||: in float32 at ρ = 1e5 a
    constraint Σ w² - 40 (δ ≈ 6e-6) moves the measure by about 0.4 relative, so a
    stationarity of 1e-5 is out of reach, while the point is as accurate as float32 gets.
    In float64 both floors are ~1e-13 of the problem's size until ρ is huge.
    """
    c = jnp.concatenate([c_eq, c_ineq])
    level = rounding_level(c, scales, z)
    noise = rho * jnp.sum(jnp.where(from_values, level * scales, 0.0))
    return RoundingFloors(violation=jnp.max(level, initial=0.0), stationarity=noise / grad_scale)


def _evaluate(problem: FlatProblem, z: Array, args: Any, rho: Array, scales: Array):
    """f, c_E, c_I (with bounds), the stationarity measure at z for penalty ρ, the
    violation's stationarity (`violation_stationarity`, row scales `scales`), and
    max(1, ||∇f||_∞)."""
    f, c_eq, c_ineq, vjp = linearise(problem, z, args)
    one = jnp.ones((), z.dtype)
    (grad_f,) = vjp((one, jnp.zeros_like(c_eq), jnp.zeros_like(c_ineq)))
    (grad_p,) = vjp((one, rho * c_eq, rho * jnp.maximum(c_ineq, 0)))
    inf_norm = lambda v: jnp.max(jnp.abs(v), initial=0.0)
    scale = jnp.maximum(1.0, inf_norm(grad_f))
    stationarity = inf_norm(grad_p) / scale
    return f, c_eq, c_ineq, stationarity, violation_stationarity(vjp, c_eq, c_ineq, scales), scale


def _from_values(c_eq: Array, c_ineq: Array) -> Bool[Array, " m"]:
    """Rows whose multiplier ρ c_E, ρ max(c_I, 0) is nonzero (computed from the value)."""
    return jnp.concatenate([jnp.ones(c_eq.shape, bool), c_ineq > 0])


class Penalty(AbstractSolver):
    """Quadratic penalty with continuation (see the module docstring).

    Attributes:
        opt_tol: stationarity tolerance (relative to max(1, ||∇f||_∞)).
        viol_tol: feasibility tolerance on the max violation.
        rho0, rho_growth, rho_max: initial penalty ρ > 0 (it weights the constraints
            and only grows; `jc.SQP`'s `mu0` weights f and shrinks), growth factor > 1,
            cap >= rho0.
        max_steps: outer iterations (penalty updates), each a whole inner minimisation
            of up to `inner_max_steps` optimiser steps: one costs many `jc.SQP`
            iterations.
        inner_max_steps: iterations of each inner minimisation.
        optimizer: the optax optimiser of the inner minimisation (default L-BFGS).
        unbounded_below: f below this on a feasible point reports UNBOUNDED.
    """

    opt_tol: float = 1e-6
    viol_tol: float = 1e-6
    rho0: float = 10.0
    rho_growth: float = 10.0
    rho_max: float = 1e12
    unbounded_below: float = -1e20
    max_steps: int = eqx.field(default=30, static=True)
    inner_max_steps: int = eqx.field(default=500, static=True)
    optimizer: optax.GradientTransformation | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        """Range checks of every numeric setting (concrete values only: a traced field in a
        vmapped sweep passes)."""
        where = lambda name: f"Penalty.{name}"
        for name in ("opt_tol", "viol_tol"):
            check_range(where(name), getattr(self, name), 0.0)
        check_range(where("rho0"), self.rho0, 0.0, lo_open=True)
        check_range(where("rho_growth"), self.rho_growth, 1.0, lo_open=True)
        check_range(where("rho_max"), self.rho_max, self.rho0)
        check_range(where("unbounded_below"), self.unbounded_below, -jnp.inf, jnp.inf)
        check_count(where("max_steps"), self.max_steps, 0)
        check_count(where("inner_max_steps"), self.inner_max_steps, 1)

    @property
    def steps(self) -> int:
        return self.max_steps

    def _optimizer(self) -> optax.GradientTransformation:
        return default_optimizer() if self.optimizer is None else self.optimizer

    def init(self, problem: FlatProblem, z0: Array, args: Any, warm_start: Any) -> PenaltyState:
        dtype = problem.dtype
        rho = jnp.asarray(self.rho0, dtype) if warm_start is None else warm_start.rho
        scales = constraint_scales(problem, z0, args) if warm_start is None else warm_start.row_scales
        f, c_eq, c_ineq, stationarity, v_stat, grad_scale = _evaluate(problem, z0, args, rho, scales)
        floors = rounding_floors(c_eq, c_ineq, scales, z0, rho, _from_values(c_eq, c_ineq), grad_scale)
        zero_i = jnp.asarray(0, jnp.int32)
        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(c_eq)) & jnp.all(jnp.isfinite(jnp.maximum(c_ineq, 0)))
        return PenaltyState(
            z=z0,
            f=f,
            c_eq=c_eq,
            c_ineq=c_ineq,
            rho=rho,
            rho_z=rho,
            violation=max_violation(c_eq, c_ineq),
            stationarity=stationarity,
            violation_stationarity=v_stat,
            row_scales=scales,
            floors=floors,
            step_norm=jnp.zeros((), dtype),
            evaluations=jnp.asarray(1, jnp.int32),
            inner_iterations=zero_i,
            # A non-finite gradient at x0 (e.g. sqrt at 0) leaves no way on either.
            nonfinite=~(finite & jnp.isfinite(stationarity)),
            diverged=jnp.asarray(False),
            stalled=jnp.asarray(False),
        )

    def step(
        self, problem: FlatProblem, state: PenaltyState, args: Any, active: Bool[Array, ""] | bool = True
    ) -> PenaltyState:
        dtype = problem.dtype
        rho = state.rho

        def merit(z):
            f = problem.objective(z, args)
            c_eq, c_ineq = problem.eq(z, args), inequalities_with_bounds(problem, z, args)
            return f + formulations.quadratic_penalty_terms(c_eq, c_ineq, rho)

        grad_f = jax.grad(lambda z: problem.objective(z, args))(state.z)
        scale = jnp.maximum(1.0, jnp.max(jnp.abs(grad_f), initial=0.0))
        inner_tol = 0.1 * dtype_tol(self.opt_tol, dtype) * scale
        result = minimise(
            merit,
            state.z,
            self._optimizer(),
            jnp.where(active, self.inner_max_steps, 0),
            inner_tol,
            max_backtracks=NONFINITE_BACKTRACKS,
            value_floor=self.unbounded_below,
        )
        z = result.z  # the last finite point of the inner run
        f, c_eq, c_ineq, stationarity, v_stat, grad_scale = _evaluate(problem, z, args, rho, state.row_scales)
        floors = rounding_floors(c_eq, c_ineq, state.row_scales, z, rho, _from_values(c_eq, c_ineq), grad_scale)
        violation = max_violation(c_eq, c_ineq)
        finite = jnp.isfinite(f) & jnp.isfinite(violation) & jnp.isfinite(stationarity)
        viol_tol = jnp.maximum(dtype_tol(self.viol_tol, dtype), floors.violation)
        rho_max = jnp.asarray(self.rho_max, dtype)
        at_max = rho >= rho_max
        raised = jnp.minimum(rho * self.rho_growth, rho_max)
        # An inner run that met NaN/Inf stops at its last finite point: keep its progress
        # and raise ρ (NaN often lies outside the feasible set, where a larger ρ keeps x out).
        met_nonfinite = result.nonfinite
        needed = jnp.minimum(rho * jnp.clip(4.0 * violation / viol_tol, 1.0, self.rho_growth), rho_max)
        new_rho = jnp.where(met_nonfinite, raised, jnp.where(violation > viol_tol, needed, rho))
        step_norm = jnp.max(jnp.abs(z - state.z), initial=0.0)
        unbounded = finite & (violation <= viol_tol) & (f < self.unbounded_below)
        evaluations = state.evaluations + result.evaluations + 2
        inner_iterations = state.inner_iterations + result.iterations
        new = PenaltyState(
            z=z,
            f=f,
            c_eq=c_eq,
            c_ineq=c_ineq,
            rho=new_rho,
            rho_z=rho,
            violation=violation,
            stationarity=stationarity,
            violation_stationarity=v_stat,
            row_scales=state.row_scales,
            floors=floors,
            step_norm=step_norm,
            evaluations=evaluations,
            inner_iterations=inner_iterations,
            # NaN/Inf with no step taken even at ρ_max: no finite way on.
            nonfinite=met_nonfinite & (step_norm == 0) & at_max,
            diverged=jnp.asarray(False),
            stalled=(step_norm == 0) & (new_rho == rho),  # nothing can change any more
        )
        # Rejected: non-finite values at z, or P_ρ run below `unbounded_below` at an
        # infeasible point (ρ too small to hold f). x stays and ρ grows; at ρ_max there is
        # no way on: NONFINITE, or UNBOUNDED when P_ρ itself ran to -inf.
        ran_off = result.value < self.unbounded_below
        rejected = ~finite | (ran_off & ~unbounded)
        kept = eqx.tree_at(
            lambda s: (s.rho, s.evaluations, s.inner_iterations, s.step_norm, s.nonfinite, s.diverged),
            state,
            (raised, evaluations, inner_iterations, jnp.zeros((), dtype), at_max & ~finite, at_max & finite),
        )
        return jax.tree_util.tree_map(lambda a, b: jnp.where(rejected, b, a), new, kept)

    def terminate(self, problem: FlatProblem, state: PenaltyState, args: Any):
        dtype = problem.dtype
        # Tolerances never below what rounding lets z certify (`rounding_floors`).
        feasible = state.violation <= jnp.maximum(dtype_tol(self.viol_tol, dtype), state.floors.violation)
        stationary = state.stationarity <= jnp.maximum(dtype_tol(self.opt_tol, dtype), state.floors.stationarity)
        converged = feasible & stationary
        unbounded = (feasible & (state.f < self.unbounded_below)) | state.diverged
        violation_stationary = state.violation_stationarity <= dtype_tol(self.opt_tol, dtype)
        # Only a point stationary for the violation is called infeasible: stationary for P_ρ
        # or stalled at ρ_max may also mean ρ_max is too small for badly scaled constraints.
        infeasible = ~feasible & (state.rho >= self.rho_max) & violation_stationary
        status = jnp.select(
            [state.nonfinite, converged, unbounded, infeasible, state.stalled],
            [Status.NONFINITE, Status.CONVERGED, Status.UNBOUNDED, Status.INFEASIBLE, Status.STALLED],
            Status.MAX_STEPS,
        )
        done = state.nonfinite | converged | unbounded | infeasible | state.stalled
        return done, status.astype(jnp.int32)

    def report(self, problem: FlatProblem, state: PenaltyState, args: Any) -> Report:
        # The multipliers of the penalty subproblem's minimiser: ρ c_E and ρ max(c_I, 0).
        # ρ is the penalty z was computed with (state.rho may since have grown).
        y_eq = state.rho_z * state.c_eq
        nu_all = state.rho_z * jnp.maximum(state.c_ineq, 0)
        y_ineq, z_lower, z_upper = split_bound_multipliers(problem, nu_all)
        return Report(
            z=state.z,
            f=state.f,
            y_eq=y_eq,
            y_ineq=y_ineq,
            z_lower=z_lower,
            z_upper=z_upper,
            stationarity=state.stationarity,
            violation=state.violation,
            evaluations=state.evaluations,
            inner_iterations=state.inner_iterations,
        )

    def progress(self, state: PenaltyState) -> Progress:
        return Progress(
            f=state.f,
            violation=state.violation,
            stationarity=state.stationarity,
            step=state.step_norm,
            penalty=state.rho,
        )
