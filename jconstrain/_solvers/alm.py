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
  (`penalty_methods.violation_stationarity`, free of constant constraint scaling: a constraint
  scaled by 1e-6 does not make x look stationary), and `max_escapes` subproblems started
  from random points nearby led back (x may be a saddle of the violation);
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
import jax.numpy as jnp
from jaxtyping import Array

from jconstrain import formulations
from jconstrain._checks import check_range
from jconstrain._solvers.penalty_methods import PenaltyMethodState, _PenaltyMethod, _Point


class AugmentedLagrangian(_PenaltyMethod):
    """The augmented Lagrangian method (see the module docstring).

    Attributes:
        opt_tol: KKT stationarity tolerance, relative to max(1, ||∇f||_∞).
        viol_tol: tolerance on the violation V (feasibility and complementarity).
        rho0: initial penalty ρ (>= 0; 0 starts from the plain Lagrangian): ρ weights
            the constraints and only grows (`jc.SQP`'s `mu0` instead weights f and
            only shrinks).
        rho_growth: factor raising ρ when V did not fall enough.
        rho_max: cap on ρ.
        unbounded_below: f below this at a feasible point reports UNBOUNDED.
        max_steps: outer iterations (multiplier updates), each a whole inner
            minimisation of up to `inner_max_steps` optimiser steps: one ALM iteration
            costs many `jc.SQP` iterations.
        inner_max_steps: iterations of each inner minimisation.
        max_escapes: restarts near a locally infeasible x before INFEASIBLE.
        optimizer: the optax optimiser of the inner minimisation (default L-BFGS).
        rho_decrease: V must fall below this fraction of the previous V to keep ρ.
        rho_min: the smallest value a raise gives ρ (so that ρ0 = 0 can grow).
        inner_tol0: the first inner tolerance ω_0 (relative, like opt_tol).
        multiplier_max: safeguard: the subproblem uses multipliers clipped to this size.
    """

    penalty_label: ClassVar[str] = "rho"

    max_steps: int = eqx.field(default=50, static=True)
    rho_decrease: float = 0.25
    rho_min: float = 1e-8
    inner_tol0: float = 1e-3
    multiplier_max: float = 1e20

    def __check_init__(self):
        where = lambda name: f"AugmentedLagrangian.{name}"
        check_range(where("rho0"), self.rho0, 0.0)
        for name in ("rho_min", "inner_tol0", "multiplier_max"):
            check_range(where(name), getattr(self, name), 0.0, lo_open=True)
        check_range(where("rho_decrease"), self.rho_decrease, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range(where("rho_max"), self.rho_max, self.rho_min)

    def _terms(self, c_eq: Array, c_ineq: Array, lam_bar: Array, nu_bar: Array, rho: Array) -> Array:
        return formulations.augmented_lagrangian_terms(c_eq, c_ineq, lam_bar, nu_bar, rho)

    def _shifts(self, state: PenaltyMethodState) -> tuple[Array, Array]:
        big = jnp.asarray(self.multiplier_max, state.z.dtype)
        return jnp.clip(state.lam, -big, big), jnp.minimum(state.nu, big)

    def _first_multipliers(self, c_eq: Array, c_ineq: Array, rho: Array, warm_start: Any) -> tuple[Array, Array]:
        if warm_start is not None:
            return warm_start.lam, warm_start.nu
        return jnp.zeros_like(c_eq), jnp.zeros_like(c_ineq)

    def _first_inner_tol(self, dtype: Any) -> Array:
        return jnp.asarray(self.inner_tol0, dtype)

    def _first_kkt_violation(self, point: _Point) -> Array:
        # No previous subproblem: V_{-1} = inf, so the first step never raises ρ.
        return jnp.asarray(jnp.inf, point.f.dtype)

    def _next_rho(self, state: PenaltyMethodState, violation: Array, kkt_violation: Array, viol_tol: Array):
        not_falling = (kkt_violation > viol_tol) & (kkt_violation > self.rho_decrease * state.kkt_violation)
        return jnp.where(not_falling, self._raise(state.rho), state.rho), not_falling

    def _raise(self, rho: Array) -> Array:
        return jnp.clip(rho * self.rho_growth, self.rho_min, self.rho_max).astype(rho.dtype)
