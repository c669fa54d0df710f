"""The one base of the penalty-type methods, `jc.AugmentedLagrangian` and `jc.Penalty`.

Both run the same outer iteration on the subproblem

    min_x  f(x) + terms(c_E(x), c_I(x); λ̄, ν̄, ρ)

(bounds as inequalities l - x <= 0, x - u <= 0; rows with an infinite bound absent):

1. minimise it from x_k with an optax optimiser (L-BFGS by default) until
   ||∇||_∞ <= ω_k max(1, ||∇f(x_k)||_∞);
2. the multipliers of x_{k+1}: λ = λ̄ + ρ c_E, ν = max(0, ν̄ + ρ c_I)
   (`formulations.augmented_lagrangian_multipliers`; the quadratic penalty is the case
   λ̄ = ν̄ = 0, so its estimates are ρ c_E and ρ max(c_I, 0));
3. a new ρ (and ω) by the method's rule.

A method says only what differs: its `terms`, its shifts (λ̄, ν̄), its first multipliers
and its ρ rule (`_PenaltyMethod`'s abstract methods). Everything else is shared here:
the measures at a point (`_evaluate`), rejection of subproblems that meet NaN/Inf or run
below `unbounded_below`, the stall test, the statuses and the report:

- CONVERGED when stationary, ||∇f + J_Eᵀλ + J_Iᵀν||_∞ / max(1, ||∇f||_∞) <= opt_tol,
  and feasible with complementarity, V = max(||c_E||_∞, ||max(c_I, -ν̄/ρ)||_∞) <= viol_tol
  (tolerances never below what rounding lets x certify, `rounding_floors`);
- INFEASIBLE when ρ is at its cap, V did not fall and x is stationary for the violation
  (`violation_stationarity`, free of constant constraint scaling), and `max_escapes`
  subproblems started from random points nearby (`escape_point`) led back there: a
  stationary point of the violation may be a saddle or a maximum;
- UNBOUNDED when f < `unbounded_below` at a feasible point, or the subproblem still runs
  below it at ρ = rho_max; NONFINITE when NaN/Inf leave no finite way on at ρ = rho_max;
- STALLED when an outer iteration at the final inner tolerance changes nothing (x,
  multipliers, ρ), or x has not moved for two iterations at ρ = rho_max;
- MAX_STEPS otherwise.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int

from jconstrain import formulations
from jconstrain._checks import check_count, check_range
from jconstrain._inner import NONFINITE_BACKTRACKS, default_optimizer, minimise
from jconstrain._misc import first_status, inf_norm, tree_where
from jconstrain._problem import (
    FlatProblem,
    inequalities_with_bounds,
    linearise,
    max_violation,
    split_bound_multipliers,
)
from jconstrain._solution import Status, StopCause
from jconstrain._solvers.base import AbstractSolver, Progress, Report, dtype_tol, escape_point, rounding_level


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


def term_sizes(problem: FlatProblem, z: Float[Array, " n"], args: Any) -> Float[Array, " mb"]:
    """t_i ≈ Σ_j |∂c_i/∂z_j| |z_j|, the size of the terms each row of (c_E, c_I with
    bounds) is summed from: max_k |J (s_k ∘ z)|_i over the sign probes s_0 = 1 and
    s_k (k >= 1) = ±1 by bit k-1 of the variable index (two terms that cancel in J z differ
    in some bit, so some probe adds them). Per row, so a huge variable that a row does not
    depend on does not count for it. One linearisation and 1 + ceil(log2 n) JVPs, in
    sequence (O(n) memory per probe).
    """
    n = z.shape[0]
    rows = lambda z: jnp.concatenate([problem.eq(z, args), inequalities_with_bounds(problem, z, args)])
    _, jvp = jax.linearize(rows, z)
    index = np.arange(n)
    signs = [np.ones(n)] + [1.0 - 2.0 * ((index >> j) & 1) for j in range(max(1, (n - 1).bit_length()))]
    probes = jnp.asarray(np.stack(signs), z.dtype) * z
    return jnp.max(jnp.abs(jax.lax.map(jvp, probes)), axis=0)


def rounding_floors(
    c_eq: Float[Array, " me"],
    c_ineq: Float[Array, " mb"],
    terms: Float[Array, " m"],
    scales: Float[Array, " m"],
    rho: Float[Array, ""],
    from_values: Bool[Array, " m"],
    grad_scale: Float[Array, ""],
) -> RoundingFloors:
    """The violation and stationarity that rounding lets these methods certify.

    With δ_i = `rounding_level`(c_i, t_i) (t = `term_sizes`, row sizes r =
    `constraint_scales` at x0):

        violation floor     max_i δ_i
        stationarity floor  ρ Σ_{i ∈ from_values} δ_i r_i / max(1, ||∇f||_∞)

    A multiplier computed from the constraint's value (ρ c_i, or λ̄_i + ρ c_i) carries
    the error ρ δ_i, which enters ∇L = ∇f + Jᵀλ times ||∇c_i||: in float32 at ρ = 1e5 a
    constraint Σ w² - 40 (δ ≈ 6e-6) moves the measure by about 0.4 relative, so a
    stationarity of 1e-5 is out of reach, while the point is as accurate as float32 gets.
    In float64 both floors are ~1e-13 of the problem's size until ρ is huge.
    """
    c = jnp.concatenate([c_eq, c_ineq])
    level = rounding_level(c, terms)
    noise = rho * jnp.sum(jnp.where(from_values, level * scales, 0.0))
    return RoundingFloors(violation=jnp.max(level, initial=0.0), stationarity=noise / grad_scale)


class PenaltyMethodState(eqx.Module):
    """The outer iterate: x_k with its values, the multipliers estimated there and ρ.

    `lam`, `nu` are the multipliers of x; `rho` is the penalty of the next subproblem,
    `inner_tol` its relative inner tolerance ω_k; `kkt_violation` is V at x.
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
    row_scales: Float[Array, " m"]  # `constraint_scales` at x0
    floors: RoundingFloors  # what rounding lets z certify (`rounding_floors`)
    step_norm: Float[Array, ""]
    evaluations: Int[Array, ""]
    inner_iterations: Int[Array, ""]
    not_falling: Bool[Array, ""]
    nonfinite: Bool[Array, ""]
    diverged: Bool[Array, ""]
    stalled: Bool[Array, ""]
    escapes: Int[Array, ""]  # subproblems started near a locally infeasible x so far


class _Point(eqx.Module):
    """f, c_E, c_I (bounds included) at z and the measures there (`_evaluate`)."""

    f: Float[Array, ""]
    c_eq: Float[Array, " me"]
    c_ineq: Float[Array, " mb"]
    stationarity: Float[Array, ""]
    violation_stationarity: Float[Array, ""]
    scale: Float[Array, ""]
    floors: RoundingFloors

    def finite(self) -> Bool[Array, ""]:
        """f, the violation and the stationarity measure are finite."""
        return (
            jnp.isfinite(self.f)
            & jnp.all(jnp.isfinite(self.c_eq))
            & jnp.all(jnp.isfinite(jnp.maximum(self.c_ineq, 0)))
            & jnp.isfinite(self.stationarity)
        )


def _evaluate(
    problem: FlatProblem, z: Array, args: Any, lam: Array, nu: Array, scales: Array, rho: Array
) -> _Point:
    """f, c_E, c_I (bounds included) and the measures at z for the multipliers (λ, ν):

    stationarity = ||∇f + J_Eᵀλ + J_Iᵀν||_∞ / max(1, ||∇f||_∞), one reverse pass each;
    violation_stationarity = `violation_stationarity` with row scales `scales`;
    floors = `rounding_floors` (one `term_sizes` more), the multipliers formed from values
    being the nonzero ones
    (λ̄ + ρ c_E and max(0, ν̄ + ρ c_I) carry ρ times the values' rounding).
    """
    f, c_eq, c_ineq, vjp = linearise(problem, z, args)
    one = jnp.ones((), z.dtype)
    (grad_f,) = vjp((one, jnp.zeros_like(c_eq), jnp.zeros_like(c_ineq)))
    (grad_l,) = vjp((one, lam, nu))
    scale = jnp.maximum(1.0, inf_norm(grad_f))
    return _Point(
        f=f,
        c_eq=c_eq,
        c_ineq=c_ineq,
        stationarity=inf_norm(grad_l) / scale,
        violation_stationarity=violation_stationarity(vjp, c_eq, c_ineq, scales),
        scale=scale,
        floors=rounding_floors(
            c_eq, c_ineq, term_sizes(problem, z, args), scales, rho, jnp.concatenate([lam != 0, nu > 0]), scale
        ),
    )


def _kkt_violation(c_eq: Array, c_ineq: Array, nu_bar: Array, rho: Array) -> Array:
    """V = max(||c_E||_∞, ||max(c_I, -ν̄/ρ)||_∞): feasibility with complementarity
    (for ν̄ = 0 the plain max violation)."""
    v_ineq = formulations.complementarity_violation(c_ineq, nu_bar, rho)
    return jnp.maximum(inf_norm(c_eq), inf_norm(v_ineq))


class _PenaltyMethod(AbstractSolver):
    """The shared outer loop (see the module docstring); subclasses give the subproblem's
    terms, its shifts, the first multipliers and the ρ rule.

    Attributes:
        opt_tol: stationarity tolerance, relative to max(1, ||∇f||_∞).
        viol_tol: tolerance on V (feasibility and complementarity).
        rho0: initial penalty ρ: it weights the constraints and only grows (`jc.SQP`'s
            `mu0` weights f and shrinks).
        rho_growth: factor (> 1) raising ρ.
        rho_max: cap on ρ (>= rho0).
        unbounded_below: f below this at a feasible point reports UNBOUNDED.
        max_steps: outer iterations, each a whole inner minimisation of up to
            `inner_max_steps` optimiser steps: one costs many `jc.SQP` iterations.
        inner_max_steps: iterations of each inner minimisation.
        max_escapes: before INFEASIBLE is reported, up to this many subproblems started
            from random points near the stuck x (radius 1e-2, 2e-2, ... times
            max(1, ||x||_∞)), as `jc.SQP` does.
        optimizer: the optax optimiser of the inner minimisation (default L-BFGS).
    """

    # Whether an inner run that met NaN/Inf keeps its last finite point (and ρ grows),
    # rather than being rejected like a run whose end point is not finite.
    keeps_nonfinite_progress: ClassVar[bool] = False

    opt_tol: float = 1e-6
    viol_tol: float = 1e-6
    rho0: float = 10.0
    rho_growth: float = 10.0
    rho_max: float = 1e12
    unbounded_below: float = -1e20
    max_steps: int = eqx.field(default=50, static=True)
    inner_max_steps: int = eqx.field(default=500, static=True)
    max_escapes: int = eqx.field(default=3, static=True)
    optimizer: optax.GradientTransformation | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        """Range checks of the shared settings (concrete values only: a traced field in a
        vmapped sweep passes); subclasses check rho0 and their own."""
        where = lambda name: f"{type(self).__name__}.{name}"
        for name in ("opt_tol", "viol_tol"):
            check_range(where(name), getattr(self, name), 0.0)
        check_range(where("rho_growth"), self.rho_growth, 1.0, lo_open=True)
        check_range(where("rho_max"), self.rho_max, self.rho0)
        check_range(where("unbounded_below"), self.unbounded_below, -jnp.inf, jnp.inf)
        check_count(where("max_steps"), self.max_steps, 0)
        check_count(where("inner_max_steps"), self.inner_max_steps, 1)
        check_count(where("max_escapes"), self.max_escapes, 0)

    # ------------------------------------------------------------- what a method says

    @abc.abstractmethod
    def _terms(self, c_eq: Array, c_ineq: Array, lam_bar: Array, nu_bar: Array, rho: Array) -> Array:
        """The subproblem's constraint terms added to f."""

    @abc.abstractmethod
    def _shifts(self, state: PenaltyMethodState) -> tuple[Array, Array]:
        """(λ̄, ν̄), the multipliers the next subproblem is shifted by."""

    @abc.abstractmethod
    def _first_multipliers(
        self, c_eq: Array, c_ineq: Array, rho: Array, warm_start: Any
    ) -> tuple[Array, Array]:
        """(λ, ν) at x0."""

    @abc.abstractmethod
    def _first_inner_tol(self, dtype: Any) -> Array:
        """ω_0, the relative tolerance of the first subproblem."""

    @abc.abstractmethod
    def _next_rho(
        self, state: PenaltyMethodState, violation: Array, kkt_violation: Array, viol_tol: Array
    ) -> tuple[Array, Bool[Array, ""]]:
        """(ρ of the next subproblem, whether V failed to fall enough) after one."""

    def _raise(self, rho: Array) -> Array:
        """ρ multiplied by `rho_growth`, capped at `rho_max`."""
        return jnp.minimum(rho * self.rho_growth, self.rho_max).astype(rho.dtype)

    # ------------------------------------------------------------- the shared loop

    @property
    def steps(self) -> int:
        return self.max_steps

    def _optimizer(self) -> optax.GradientTransformation:
        return default_optimizer() if self.optimizer is None else self.optimizer

    def init(self, problem: FlatProblem, z0: Array, args: Any, warm_start: Any) -> PenaltyMethodState:
        dtype = problem.dtype
        if warm_start is None:
            rho = jnp.asarray(self.rho0, dtype)
            inner_tol = self._first_inner_tol(dtype)
            scales = constraint_scales(problem, z0, args)
        else:
            rho, inner_tol, scales = warm_start.rho, warm_start.inner_tol, warm_start.row_scales
        c_eq, c_ineq = problem.eq(z0, args), inequalities_with_bounds(problem, z0, args)
        lam, nu = self._first_multipliers(c_eq, c_ineq, rho, warm_start)
        point = _evaluate(problem, z0, args, lam, nu, scales, rho)
        return PenaltyMethodState(
            z=z0,
            f=point.f,
            c_eq=point.c_eq,
            c_ineq=point.c_ineq,
            lam=lam,
            nu=nu,
            rho=rho,
            inner_tol=inner_tol,
            violation=max_violation(point.c_eq, point.c_ineq),
            kkt_violation=self._first_kkt_violation(point),
            stationarity=point.stationarity,
            violation_stationarity=point.violation_stationarity,
            row_scales=scales,
            floors=point.floors,
            step_norm=jnp.zeros((), dtype),
            evaluations=jnp.asarray(1, jnp.int32),
            inner_iterations=jnp.asarray(0, jnp.int32),
            not_falling=jnp.asarray(False),
            # A non-finite gradient at x0 (e.g. sqrt at 0) leaves no way on either.
            nonfinite=~point.finite(),
            diverged=jnp.asarray(False),
            stalled=jnp.asarray(False),
            escapes=jnp.asarray(0, jnp.int32),
        )

    def _first_kkt_violation(self, point: _Point) -> Array:
        """V at x0: the max violation (a method may say inf, to never raise ρ first)."""
        return max_violation(point.c_eq, point.c_ineq)

    def step(
        self, problem: FlatProblem, state: PenaltyMethodState, args: Any, active: Bool[Array, ""] | bool = True
    ) -> PenaltyMethodState:
        """One outer iteration: the inner minimisation of the merit (`_inner_run`), then the
        state at its end point (`_accepted`), or the old state with ρ raised (`_kept`).

        Rejected: non-finite values at z, a rejected non-finite run, or the subproblem run
        below `unbounded_below` at an infeasible point (ρ too small to hold f). x and the
        multipliers stay and ρ grows; at ρ_max there is no way on: NONFINITE, or UNBOUNDED
        when the subproblem itself ran to -inf at finite values.
        """
        result, shifts, escape = self._inner_run(problem, state, args, active)
        accepted, finite, unbounded = self._accepted(problem, state, args, result, shifts, escape)
        run_nonfinite = jnp.zeros_like(result.nonfinite) if self.keeps_nonfinite_progress else result.nonfinite
        ran_off = run_nonfinite | (result.value < self.unbounded_below)
        rejected = ~finite | (ran_off & ~unbounded)
        return tree_where(rejected, self._kept(state, accepted, finite & ~run_nonfinite), accepted)

    def _inner_run(self, problem: FlatProblem, state: PenaltyMethodState, args: Any, active):
        """The inner optimiser on the merit f + terms(c; shifts, ρ) from x (or, where x is
        locally infeasible and escapes are left, from `escape_point` nearby), to the
        relative tolerance inner_tol·max(1, ||∇f||_∞). Returns (result, shifts, escaped)."""
        rho = state.rho
        lam_bar, nu_bar = self._shifts(state)

        def merit(z):
            c_eq, c_ineq = problem.eq(z, args), inequalities_with_bounds(problem, z, args)
            return problem.objective(z, args) + self._terms(c_eq, c_ineq, lam_bar, nu_bar, rho)

        grad_f = jax.grad(lambda z: problem.objective(z, args))(state.z)
        escape = self._locally_infeasible(problem, state) & (state.escapes < self.max_escapes)
        radius = 1e-2 * jnp.asarray(state.escapes + 1, state.z.dtype)  # 1e-2 k for the k-th escape
        nearby = escape_point(state.z, radius, state.escapes, problem.lower, problem.upper)
        result = minimise(
            merit,
            jnp.where(escape, nearby, state.z),
            self._optimizer(),
            jnp.where(active, self.inner_max_steps, 0),
            state.inner_tol * jnp.maximum(1.0, inf_norm(grad_f)),
            max_backtracks=NONFINITE_BACKTRACKS,
            value_floor=self.unbounded_below,
        )
        return result, (lam_bar, nu_bar), escape

    def _accepted(self, problem: FlatProblem, state: PenaltyMethodState, args: Any, result, shifts, escape):
        """The state at the inner run's last finite point z: multipliers, every measure,
        the next ρ and the stall test. Returns (state, finite, unbounded)."""
        dtype = problem.dtype
        rho = state.rho
        lam_bar, nu_bar = shifts
        z = result.z  # the last finite point of the inner run
        # Multipliers at z, then every measure at (z, λ, ν).
        c_eq, c_ineq = problem.eq(z, args), inequalities_with_bounds(problem, z, args)
        lam, nu = formulations.augmented_lagrangian_multipliers(c_eq, c_ineq, lam_bar, nu_bar, rho)
        point = _evaluate(problem, z, args, lam, nu, state.row_scales, rho)
        viol_tol = jnp.maximum(dtype_tol(self.viol_tol, dtype), point.floors.violation)
        violation = max_violation(point.c_eq, point.c_ineq)
        kkt_violation = _kkt_violation(point.c_eq, point.c_ineq, nu_bar, rho)
        new_rho, not_falling = self._next_rho(state, violation, kkt_violation, viol_tol)
        # An inner run that met NaN/Inf: its last finite point is kept and ρ grows (NaN
        # often lies outside the feasible set, where a larger ρ keeps x out), or rejected.
        met_nonfinite = result.nonfinite if self.keeps_nonfinite_progress else jnp.zeros_like(result.nonfinite)
        new_rho = jnp.where(met_nonfinite, self._raise(rho), new_rho)
        floor = 0.1 * dtype_tol(self.opt_tol, dtype)
        finite = point.finite() & jnp.isfinite(kkt_violation)
        unbounded = finite & (violation <= viol_tol) & (point.f < self.unbounded_below)
        at_max = rho >= self.rho_max
        step_norm = inf_norm(z - state.z)
        # Stalled: an outer iteration at the final inner tolerance changed nothing, or, at
        # ρ_max, x has not moved for two outer iterations in a row (only the multipliers
        # still grow: e.g. a constraint scaled by 1e-6 next to one scaled by 1e6, where
        # the subproblem is too ill-conditioned for the inner optimiser to move).
        unchanged = jnp.all(lam == state.lam) & jnp.all(nu == state.nu)
        stuck_at_max = at_max & (state.step_norm == 0) & (state.evaluations > 1)
        stalled = (step_norm == 0) & (new_rho == rho) & (state.inner_tol <= floor) & (unchanged | stuck_at_max)
        accepted = PenaltyMethodState(
            z=z, f=point.f, c_eq=point.c_eq, c_ineq=point.c_ineq, lam=lam, nu=nu, rho=new_rho,
            inner_tol=jnp.maximum(0.1 * state.inner_tol, floor), violation=violation, kkt_violation=kkt_violation,
            stationarity=point.stationarity, violation_stationarity=point.violation_stationarity,
            row_scales=state.row_scales, floors=point.floors, step_norm=step_norm,
            evaluations=state.evaluations + result.evaluations + 2,
            inner_iterations=state.inner_iterations + result.iterations, not_falling=not_falling,
            # NaN/Inf with no step taken even at ρ_max: no finite way on.
            nonfinite=met_nonfinite & (step_norm == 0) & at_max, diverged=jnp.asarray(False), stalled=stalled,
            escapes=state.escapes + escape.astype(jnp.int32),
        )
        return accepted, finite, unbounded

    def _kept(self, state: PenaltyMethodState, accepted: PenaltyMethodState, finite_run_off) -> PenaltyMethodState:
        """The old point with ρ raised and the run's counters; at ρ_max NONFINITE, or
        UNBOUNDED (`diverged`) when the run went below `unbounded_below` at finite values."""
        at_max = state.rho >= self.rho_max
        return eqx.tree_at(
            lambda s: (s.rho, s.evaluations, s.inner_iterations, s.step_norm, s.nonfinite, s.diverged, s.escapes),
            state,
            (
                self._raise(state.rho),
                accepted.evaluations,
                accepted.inner_iterations,
                jnp.zeros((), state.z.dtype),
                at_max & ~finite_run_off,
                at_max & finite_run_off,
                accepted.escapes,
            ),
        )

    def _tolerances(self, dtype: Any, state: PenaltyMethodState) -> tuple[Array, Array]:
        """(opt_tol, viol_tol) in effect at the state: never below what rounding lets z
        certify (`rounding_floors`) or the dtype can reach."""
        opt_tol = dtype_tol(self.opt_tol, dtype)
        return opt_tol, jnp.maximum(dtype_tol(self.viol_tol, dtype), state.floors.violation)

    def _locally_infeasible(self, problem: FlatProblem, state: PenaltyMethodState) -> Bool[Array, ""]:
        """x infeasible and stationary for the violation, V no longer falling at ρ_max.

        Only a point stationary for the violation counts: stationary for the subproblem,
        or stalled at ρ_max, may also mean ρ_max is too small for badly scaled constraints.
        """
        opt_tol, viol_tol = self._tolerances(problem.dtype, state)
        return (
            ~(state.violation <= viol_tol)
            & (state.rho >= self.rho_max)
            & state.not_falling
            & (state.violation_stationarity <= opt_tol)
        )

    def terminate(self, problem: FlatProblem, state: PenaltyMethodState, args: Any):
        opt_tol, viol_tol = self._tolerances(problem.dtype, state)
        feasible = state.violation <= viol_tol
        stationary = state.stationarity <= jnp.maximum(opt_tol, state.floors.stationarity)
        converged = (state.kkt_violation <= viol_tol) & feasible & stationary
        unbounded = (feasible & (state.f < self.unbounded_below)) | state.diverged
        # INFEASIBLE once the restarts nearby (`step`'s escapes) are spent; until then a
        # stall there is not final either.
        locally_infeasible = self._locally_infeasible(problem, state)
        escapes_left = state.escapes < self.max_escapes
        return first_status(
            (state.nonfinite, Status.NONFINITE),
            (converged, Status.CONVERGED),
            (unbounded, Status.UNBOUNDED),
            (locally_infeasible & ~escapes_left, Status.INFEASIBLE),
            (state.stalled & ~(locally_infeasible & escapes_left), Status.STALLED),
        )

    def report(self, problem: FlatProblem, state: PenaltyMethodState, args: Any) -> Report:
        y_ineq, z_lower, z_upper = split_bound_multipliers(problem, state.nu)
        # A stall at ρ_max with the constraints still violated names the penalty's limit.
        _, viol_tol = self._tolerances(problem.dtype, state)
        at_limit = (state.rho >= self.rho_max) & ~(state.violation <= viol_tol)
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
            stop_cause=jnp.where(at_limit, StopCause.PENALTY_LIMIT, StopCause.NO_CHANGE),
        )

    def progress(self, state: PenaltyMethodState) -> Progress:
        return Progress(
            f=state.f,
            violation=state.violation,
            stationarity=state.stationarity,
            step=state.step_norm,
            penalty=state.rho,
        )
