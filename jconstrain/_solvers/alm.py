"""`jc.AugmentedLagrangian`: the method of multipliers with safeguards (ALGENCAN style).

    L_ρ(x, λ, ν) = f + λ·c_E + ρ/2 ||c_E||² + 1/(2ρ) Σ (max(0, ν + ρ c_I)² - ν²)

(`formulations.augmented_lagrangian_terms`; bounds are inequalities l - x <= 0,
x - u <= 0, rows with an infinite bound are absent). Outer iteration k:

1. Approximately minimise L_ρ(·, λ̄, ν̄) from x_k (warm start) with an optax optimiser
   (L-BFGS by default) until ||∇_x L_ρ||_∞ <= ω_k max(1, ||∇f(x_k)||_∞). The inner
   tolerance starts at ω_0 = `inner_tol0` and tightens, ω_{k+1} = max(0.1 ω_k, 0.1·opt_tol),
   as in ALGENCAN (Birgin & Martínez 2014, Algorithm 4.1).
2. Multipliers: λ = λ̄ + ρ c_E, ν = max(0, ν̄ + ρ c_I)
   (`formulations.augmented_lagrangian_multipliers`). The subproblem uses the
   safeguarded λ̄ = clip(λ, ±multiplier_max), ν̄ = min(ν, multiplier_max).
3. Penalty: with V = max(||c_E||_∞, ||max(c_I, -ν̄/ρ)||_∞) (feasibility and
   complementarity, `formulations.complementarity_violation`), ρ is multiplied by
   `rho_growth` (capped at `rho_max`) when V > viol_tol and V > `rho_decrease`·V_{k-1}.

Since ∇_x L_ρ(x, λ̄, ν̄) = ∇_x L(x, λ, ν) for the updated multipliers, the inner
tolerance controls the KKT residual directly. The method stops with

- CONVERGED when ||∇_x L(x, λ, ν)||_∞ / max(1, ||∇f||_∞) <= opt_tol and V <= viol_tol;
- INFEASIBLE when ρ is at its cap, V did not fall, and x is stationary for the
  violation w = (c_E, max(c_I, 0)): the violated rows' gradients cancel (Jᵀw ≈ 0
  relative to their size) or have vanished relative to their size at x0, to opt_tol
  (`penalty.violation_stationarity`, free of constant constraint scaling: a constraint
  scaled by 1e-6 does not make x look stationary);
- UNBOUNDED when f < `unbounded_below` at a feasible point, or when L_ρ at ρ = rho_max
  still runs below `unbounded_below` (x is then the last accepted point);
- NONFINITE when the subproblem meets NaN/Inf even at ρ = rho_max;
- STALLED when an outer iteration changes nothing (x, multipliers, ρ) at the final
  inner tolerance, or when x has not moved for two outer iterations at ρ = rho_max
  (an ill-conditioned subproblem, e.g. constraints scaled by 1e6 and 1e-6 together);
- MAX_STEPS otherwise.

A subproblem that meets NaN/Inf, or whose L_ρ runs below `unbounded_below` at an
infeasible point (ρ too small to hold f), is rejected: x and the multipliers stay and
ρ grows.

Any ρ0 >= 0 is accepted, ρ0 = 0 included: the formulation terms are written to stay
finite as ρ -> 0, and raising ρ from below `rho_min` sets it to `rho_min`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
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
from jconstrain._solvers.base import AbstractSolver, Progress, Report, dtype_tol
from jconstrain._solvers.penalty import RoundingFloors, constraint_scales, rounding_floors, violation_stationarity


class AugmentedLagrangianState(eqx.Module):
    """The outer iterate: x_k with its values, the multipliers estimated there and ρ.

    `lam`, `nu` are the multipliers of x (the updated ones); `rho` is the penalty of
    the next subproblem; `inner_tol` its relative inner tolerance ω_k.
    """

    z: Float[Array, " n"]
    f: Float[Array, ""]
    c_eq: Float[Array, " me"]
    c_ineq: Float[Array, " mb"]
    lam: Float[Array, " me"]
    nu: Float[Array, " mb"]
    rho: Float[Array, ""]
    inner_tol: Float[Array, ""]
    violation: Float[Array, ""]
    kkt_violation: Float[Array, ""]
    stationarity: Float[Array, ""]
    violation_stationarity: Float[Array, ""]
    row_scales: Float[Array, " m"]  # `penalty.constraint_scales` at x0
    floors: RoundingFloors  # what rounding lets z certify (`penalty.rounding_floors`)
    step_norm: Float[Array, ""]
    evaluations: Int[Array, ""]
    inner_iterations: Int[Array, ""]
    not_falling: Bool[Array, ""]
    nonfinite: Bool[Array, ""]
    diverged: Bool[Array, ""]
    stalled: Bool[Array, ""]


class _Point(eqx.Module):
    f: Float[Array, ""]
    c_eq: Float[Array, " me"]
    c_ineq: Float[Array, " mb"]
    stationarity: Float[Array, ""]
    violation_stationarity: Float[Array, ""]
    scale: Float[Array, ""]
    floors: RoundingFloors


def _evaluate(problem: FlatProblem, z: Array, args: Any, lam: Array, nu: Array, scales: Array, rho: Array) -> _Point:
    """f, c_E, c_I (bounds included) and the stationarity measures at z.

    stationarity = ||∇f + J_E^T λ + J_I^T ν||_∞ / max(1, ||∇f||_∞);
    violation_stationarity = `penalty.violation_stationarity` with row scales `scales`
    (zero where the violation w = (c_E, max(c_I, 0)) is stationary, free of constant
    constraint scaling).
    """
    f, c_eq, c_ineq, vjp = linearise(problem, z, args)
    one = jnp.ones((), z.dtype)
    (grad_f,) = vjp((one, jnp.zeros_like(c_eq), jnp.zeros_like(c_ineq)))
    (grad_l,) = vjp((one, lam, nu))
    inf_norm = lambda v: jnp.max(jnp.abs(v), initial=0.0)
    scale = jnp.maximum(1.0, inf_norm(grad_f))
    return _Point(
        f=f,
        c_eq=c_eq,
        c_ineq=c_ineq,
        stationarity=inf_norm(grad_l) / scale,
        violation_stationarity=violation_stationarity(vjp, c_eq, c_ineq, scales),
        scale=scale,
        # λ = λ̄ + ρ c_E and ν = max(0, ν̄ + ρ c_I) carry ρ times the values' rounding.
        floors=rounding_floors(c_eq, c_ineq, scales, z, rho, jnp.concatenate([lam != 0, nu > 0]), scale),
    )


def _kkt_violation(c_eq: Array, c_ineq: Array, nu: Array, rho: Array) -> Array:
    """V = max(||c_E||_∞, ||max(c_I, -ν/ρ)||_∞): feasibility with complementarity."""
    v_ineq = formulations.complementarity_violation(c_ineq, nu, rho)
    return jnp.maximum(jnp.max(jnp.abs(c_eq), initial=0.0), jnp.max(jnp.abs(v_ineq), initial=0.0))


def _finite(point: _Point) -> Bool[Array, ""]:
    return (
        jnp.isfinite(point.f)
        & jnp.all(jnp.isfinite(point.c_eq))
        & jnp.all(jnp.isfinite(jnp.maximum(point.c_ineq, 0)))
        & jnp.isfinite(point.stationarity)
    )


class AugmentedLagrangian(AbstractSolver):
    """The augmented Lagrangian method (see the module docstring).

    Attributes:
        opt_tol: KKT stationarity tolerance, relative to max(1, ||∇f||_∞).
        viol_tol: tolerance on the violation V (feasibility and complementarity).
        rho0: initial penalty ρ (>= 0; 0 starts from the plain Lagrangian): ρ weights
            the constraints and only grows (`jc.SQP`'s `mu0` instead weights f and
            only shrinks).
        rho_growth: factor raising ρ when V did not fall enough.
        rho_decrease: V must fall below this fraction of the previous V to keep ρ.
        rho_min: the smallest value a raise gives ρ (so that ρ0 = 0 can grow).
        rho_max: cap on ρ.
        inner_tol0: the first inner tolerance ω_0 (relative, like opt_tol).
        multiplier_max: safeguard: the subproblem uses multipliers clipped to this size.
        unbounded_below: f below this at a feasible point reports UNBOUNDED.
        max_steps: outer iterations (multiplier updates), each a whole inner
            minimisation of up to `inner_max_steps` optimiser steps: one ALM iteration
            costs many `jc.SQP` iterations.
        inner_max_steps: iterations of each inner minimisation.
        optimizer: the optax optimiser of the inner minimisation (default L-BFGS).
    """

    penalty_label: ClassVar[str] = "rho"

    opt_tol: float = 1e-6
    viol_tol: float = 1e-6
    rho0: float = 10.0
    rho_growth: float = 10.0
    rho_decrease: float = 0.25
    rho_min: float = 1e-8
    rho_max: float = 1e12
    inner_tol0: float = 1e-3
    multiplier_max: float = 1e20
    unbounded_below: float = -1e20
    max_steps: int = eqx.field(default=50, static=True)
    inner_max_steps: int = eqx.field(default=500, static=True)
    optimizer: optax.GradientTransformation | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        """Range checks of every numeric setting (concrete values only: a traced field in a
        vmapped sweep passes)."""
        where = lambda name: f"AugmentedLagrangian.{name}"
        for name in ("opt_tol", "viol_tol", "rho0"):
            check_range(where(name), getattr(self, name), 0.0)
        for name in ("rho_min", "inner_tol0", "multiplier_max"):
            check_range(where(name), getattr(self, name), 0.0, lo_open=True)
        check_range(where("rho_growth"), self.rho_growth, 1.0, lo_open=True)
        check_range(where("rho_decrease"), self.rho_decrease, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range(where("rho_max"), self.rho_max, self.rho0)
        check_range(where("rho_max"), self.rho_max, self.rho_min)
        check_range(where("unbounded_below"), self.unbounded_below, -jnp.inf, jnp.inf)
        check_count(where("max_steps"), self.max_steps, 0)
        check_count(where("inner_max_steps"), self.inner_max_steps, 1)

    @property
    def steps(self) -> int:
        return self.max_steps

    def _optimizer(self) -> optax.GradientTransformation:
        return default_optimizer() if self.optimizer is None else self.optimizer

    def _raise(self, rho: Array) -> Array:
        return jnp.clip(rho * self.rho_growth, self.rho_min, self.rho_max).astype(rho.dtype)

    def init(self, problem: FlatProblem, z0: Array, args: Any, warm_start: Any) -> AugmentedLagrangianState:
        dtype = problem.dtype
        m_ineq = jax.eval_shape(lambda z: inequalities_with_bounds(problem, z, args), z0).shape[0]
        if warm_start is None:
            lam = jnp.zeros((problem.m_eq,), dtype)
            nu = jnp.zeros((m_ineq,), dtype)
            rho = jnp.asarray(self.rho0, dtype)
            inner_tol = jnp.asarray(self.inner_tol0, dtype)
        else:
            lam, nu, rho, inner_tol = warm_start.lam, warm_start.nu, warm_start.rho, warm_start.inner_tol
        scales = constraint_scales(problem, z0, args) if warm_start is None else warm_start.row_scales
        point = _evaluate(problem, z0, args, lam, nu, scales, rho)
        return AugmentedLagrangianState(
            z=z0,
            f=point.f,
            c_eq=point.c_eq,
            c_ineq=point.c_ineq,
            lam=lam,
            nu=nu,
            rho=rho,
            inner_tol=inner_tol,
            violation=max_violation(point.c_eq, point.c_ineq),
            # No previous subproblem: V_{-1} = inf, so the first step never raises ρ.
            kkt_violation=jnp.asarray(jnp.inf, dtype),
            stationarity=point.stationarity,
            violation_stationarity=point.violation_stationarity,
            row_scales=scales,
            floors=point.floors,
            step_norm=jnp.zeros((), dtype),
            evaluations=jnp.asarray(1, jnp.int32),
            inner_iterations=jnp.asarray(0, jnp.int32),
            not_falling=jnp.asarray(False),
            nonfinite=~_finite(point),
            diverged=jnp.asarray(False),
            stalled=jnp.asarray(False),
        )

    def step(
        self, problem: FlatProblem, state: AugmentedLagrangianState, args: Any, active: Bool[Array, ""] | bool = True
    ) -> AugmentedLagrangianState:
        dtype = problem.dtype
        rho = state.rho
        big = jnp.asarray(self.multiplier_max, dtype)
        lam_bar = jnp.clip(state.lam, -big, big)
        nu_bar = jnp.minimum(state.nu, big)

        def merit(z):
            f = problem.objective(z, args)
            c_eq, c_ineq = problem.eq(z, args), inequalities_with_bounds(problem, z, args)
            return f + formulations.augmented_lagrangian_terms(c_eq, c_ineq, lam_bar, nu_bar, rho)

        opt_tol = dtype_tol(self.opt_tol, dtype)
        viol_tol = dtype_tol(self.viol_tol, dtype)
        grad_f = jax.grad(lambda z: problem.objective(z, args))(state.z)
        scale = jnp.maximum(1.0, jnp.max(jnp.abs(grad_f), initial=0.0))
        result = minimise(
            merit,
            state.z,
            self._optimizer(),
            jnp.where(active, self.inner_max_steps, 0),
            state.inner_tol * scale,
            max_backtracks=NONFINITE_BACKTRACKS,
            value_floor=self.unbounded_below,
        )
        z = result.z

        # Multipliers at z, then every measure at (z, λ, ν).
        c_eq, c_ineq = problem.eq(z, args), inequalities_with_bounds(problem, z, args)
        lam, nu = formulations.augmented_lagrangian_multipliers(c_eq, c_ineq, lam_bar, nu_bar, rho)
        point = _evaluate(problem, z, args, lam, nu, state.row_scales, rho)
        viol_tol = jnp.maximum(viol_tol, point.floors.violation)
        violation = max_violation(point.c_eq, point.c_ineq)
        kkt_violation = _kkt_violation(point.c_eq, point.c_ineq, nu_bar, rho)
        not_falling = (kkt_violation > viol_tol) & (kkt_violation > self.rho_decrease * state.kkt_violation)
        new_rho = jnp.where(not_falling, self._raise(rho), rho)
        floor = 0.1 * opt_tol
        inner_tol = jnp.maximum(0.1 * state.inner_tol, floor)

        finite = _finite(point) & jnp.isfinite(kkt_violation)
        unbounded = finite & (violation <= viol_tol) & (point.f < self.unbounded_below)
        # A subproblem that met NaN/Inf or ran below `unbounded_below` at an infeasible
        # point is rejected: x and the multipliers stay and ρ grows. At the cap there is
        # no way on: NONFINITE, or UNBOUNDED when L_ρ itself went to -inf (finite).
        ran_off = result.nonfinite | (result.value < self.unbounded_below)
        rejected = ~finite | (ran_off & ~unbounded)
        at_max = rho >= self.rho_max
        step_norm = jnp.max(jnp.abs(z - state.z), initial=0.0)
        # Stalled: an outer iteration at the final inner tolerance changed nothing, or, at
        # ρ_max, x has not moved for two outer iterations in a row (only the multipliers
        # still grow: e.g. a constraint scaled by 1e-6 next to one scaled by 1e6, where
        # the subproblem is too ill-conditioned for the inner optimiser to move).
        unchanged = jnp.all(lam == state.lam) & jnp.all(nu == state.nu)
        stuck_at_max = (rho >= self.rho_max) & (state.step_norm == 0) & (state.evaluations > 1)
        stalled = (step_norm == 0) & (new_rho == rho) & (state.inner_tol <= floor) & (unchanged | stuck_at_max)
        evaluations = state.evaluations + result.evaluations + 2
        inner_iterations = state.inner_iterations + result.iterations
        accepted = AugmentedLagrangianState(
            z=z,
            f=point.f,
            c_eq=point.c_eq,
            c_ineq=point.c_ineq,
            lam=lam,
            nu=nu,
            rho=new_rho,
            inner_tol=inner_tol,
            violation=violation,
            kkt_violation=kkt_violation,
            stationarity=point.stationarity,
            violation_stationarity=point.violation_stationarity,
            row_scales=state.row_scales,
            floors=point.floors,
            step_norm=step_norm,
            evaluations=evaluations,
            inner_iterations=inner_iterations,
            not_falling=not_falling,
            nonfinite=jnp.asarray(False),
            diverged=jnp.asarray(False),
            stalled=stalled,
        )
        finite_run_off = finite & ~result.nonfinite
        kept = eqx.tree_at(
            lambda s: (s.rho, s.evaluations, s.inner_iterations, s.step_norm, s.nonfinite, s.diverged),
            state,
            (
                self._raise(rho),
                evaluations,
                inner_iterations,
                jnp.zeros((), dtype),
                at_max & ~finite_run_off,
                at_max & finite_run_off,
            ),
        )
        return jax.tree_util.tree_map(lambda a, b: jnp.where(rejected, b, a), accepted, kept)

    def terminate(self, problem: FlatProblem, state: AugmentedLagrangianState, args: Any):
        dtype = problem.dtype
        # Tolerances never below what rounding lets z certify (`penalty.rounding_floors`).
        opt_tol = dtype_tol(self.opt_tol, dtype)
        viol_tol = jnp.maximum(dtype_tol(self.viol_tol, dtype), state.floors.violation)
        feasible = state.violation <= viol_tol
        stationary = state.stationarity <= jnp.maximum(opt_tol, state.floors.stationarity)
        converged = (state.kkt_violation <= viol_tol) & feasible & stationary
        unbounded = (feasible & (state.f < self.unbounded_below)) | state.diverged
        infeasible = (
            ~feasible
            & (state.rho >= self.rho_max)
            & state.not_falling
            & (state.violation_stationarity <= opt_tol)
        )
        status = jnp.select(
            [state.nonfinite, converged, unbounded, infeasible, state.stalled],
            [Status.NONFINITE, Status.CONVERGED, Status.UNBOUNDED, Status.INFEASIBLE, Status.STALLED],
            Status.MAX_STEPS,
        )
        done = state.nonfinite | converged | unbounded | infeasible | state.stalled
        return done, status.astype(jnp.int32)

    def report(self, problem: FlatProblem, state: AugmentedLagrangianState, args: Any) -> Report:
        y_ineq, z_lower, z_upper = split_bound_multipliers(problem, state.nu)
        return Report(
            z=state.z,
            f=state.f,
            y_eq=state.lam,
            y_ineq=y_ineq,
            z_lower=z_lower,
            z_upper=z_upper,
            stationarity=state.stationarity,
            violation=state.violation,
            evaluations=state.evaluations,
            inner_iterations=state.inner_iterations,
        )

    def progress(self, state: AugmentedLagrangianState) -> Progress:
        return Progress(
            f=state.f,
            violation=state.violation,
            stationarity=state.stationarity,
            step=state.step_norm,
            penalty=state.rho,
        )
