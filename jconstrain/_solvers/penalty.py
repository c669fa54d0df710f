"""`jc.Penalty`: the quadratic penalty method with continuation.

    P_ρ(x) = f(x) + ρ/2 (||c_E(x)||² + ||max(c_I(x), 0)||²)

Each outer step minimises P_ρ from the current point with an optax optimiser (L-BFGS
by default), then, while the violation V exceeds `viol_tol`, multiplies ρ by
min(rho_growth, 4 V / viol_tol): the violation of a minimiser of P_ρ falls like |λ|/ρ, so
near the tolerance ρ grows only as far as that law needs to land at viol_tol / 4, not by a
full `rho_growth` into needless ill-conditioning (at ρ ~ 1e10 rounding in ρ c alone can
hold ||∇P_ρ|| above opt_tol).
The margin keeps f accurate too: its error is about |λ| V.
Bounds are treated as inequality constraints l - x <= 0, x - u <= 0.

At a minimiser of P_ρ the multiplier estimates are λ = ρ c_E, ν = ρ max(c_I, 0); the
stationarity measure is ||∇_x L||_∞ / max(1, ||∇f||_∞) = ||∇P_ρ||_∞ / max(1, ||∇f||_∞).

Statuses: CONVERGED when feasible (viol_tol) and stationary (opt_tol); INFEASIBLE at
ρ = rho_max when x is infeasible and stationary for the violation w = (c_E, max(c_I, 0))
to opt_tol (`violation_stationarity`, free of constant constraint scaling; at a
minimiser of P_ρ, Jᵀw = -∇f/ρ) and `max_escapes` subproblems started from random
points nearby led back: x is then a least-violation point of ½||w||² (bounds counted as
soft rows); UNBOUNDED when f < `unbounded_below` at a
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

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from jconstrain import formulations
from jconstrain._checks import check_range
from jconstrain._solvers.base import dtype_tol
from jconstrain._solvers.penalty_methods import PenaltyMethodState, _PenaltyMethod


class Penalty(_PenaltyMethod):
    """Quadratic penalty with continuation (see the module docstring).

    Attributes:
        opt_tol: stationarity tolerance (relative to max(1, ||∇f||_∞)).
        viol_tol: feasibility tolerance on the max violation.
        rho0, rho_growth, rho_max: initial penalty ρ > 0 (it weights the constraints
            and only grows; `jc.SQP`'s `mu0` weights f and shrinks), growth factor > 1,
            cap >= rho0.
        unbounded_below: f below this on a feasible point reports UNBOUNDED.
        max_steps: outer iterations (penalty updates), each a whole inner minimisation
            of up to `inner_max_steps` optimiser steps: one costs many `jc.SQP`
            iterations.
        inner_max_steps: iterations of each inner minimisation.
        max_escapes: restarts near a locally infeasible x before INFEASIBLE.
        optimizer: the optax optimiser of the inner minimisation (default L-BFGS).
    """

    keeps_nonfinite_progress: ClassVar[bool] = True

    max_steps: int = eqx.field(default=30, static=True)

    def __check_init__(self):
        check_range("Penalty.rho0", self.rho0, 0.0, lo_open=True)

    def _terms(self, c_eq: Array, c_ineq: Array, lam_bar: Array, nu_bar: Array, rho: Array) -> Array:
        return formulations.quadratic_penalty_terms(c_eq, c_ineq, rho)

    def _shifts(self, state: PenaltyMethodState) -> tuple[Array, Array]:
        return jnp.zeros_like(state.lam), jnp.zeros_like(state.nu)

    def _first_multipliers(self, c_eq: Array, c_ineq: Array, rho: Array, warm_start: Any) -> tuple[Array, Array]:
        # The estimates ρ c_E, ρ max(c_I, 0) of the minimiser of P_ρ.
        return formulations.augmented_lagrangian_multipliers(
            c_eq, c_ineq, jnp.zeros_like(c_eq), jnp.zeros_like(c_ineq), rho
        )

    def _first_inner_tol(self, dtype: Any) -> Array:
        # Every subproblem to a tenth of opt_tol: ρ alone moves x towards feasibility.
        return 0.1 * dtype_tol(self.opt_tol, dtype)

    def _next_rho(self, state: PenaltyMethodState, violation: Array, kkt_violation: Array, viol_tol: Array):
        infeasible = violation > viol_tol
        factor = jnp.clip(4.0 * violation / viol_tol, 1.0, self.rho_growth)
        return jnp.where(infeasible, jnp.minimum(state.rho * factor, self.rho_max), state.rho), infeasible
