"""`jc.Penalty`: the quadratic penalty method with continuation.

    P_ρ(x) = f(x) + ρ/2 (||c_E(x)||² + ||max(c_I(x), 0)||²)

Each outer step minimises P_ρ from the current point with an optax optimiser (L-BFGS
by default), then multiplies ρ by `rho_growth` while the violation exceeds `viol_tol`.
Bounds are treated as inequality constraints l - x <= 0, x - u <= 0.

At a minimiser of P_ρ the multiplier estimates are λ = ρ c_E, ν = ρ max(c_I, 0); the
stationarity measure is ||∇_x L||_∞ / max(1, ||∇f||_∞) = ||∇P_ρ||_∞ / max(1, ||∇f||_∞).
The violation falls like O(1/ρ): reaching 1e-6 takes ρ of order 1e6 × |λ|, so the
subproblems grow ill-conditioned; prefer `jc.AugmentedLagrangian` or `jc.SQP` for
high accuracy.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from jconstrain import formulations
from jconstrain.inner import default_optimizer, minimise
from jconstrain.problem import (
    FlatProblem,
    inequalities_with_bounds,
    linearise,
    max_violation,
    split_bound_multipliers,
)
from jconstrain.solution import Status
from jconstrain.solvers.base import AbstractSolver, Progress, Report, dtype_tol


class PenaltyState(eqx.Module):
    z: Float[Array, " n"]
    f: Float[Array, ""]
    c_eq: Float[Array, " me"]
    c_ineq: Float[Array, " mb"]
    rho: Float[Array, ""]  # the penalty of the next subproblem
    rho_z: Float[Array, ""]  # the penalty of the subproblem z minimises (scales the multipliers)
    violation: Float[Array, ""]
    stationarity: Float[Array, ""]
    step_norm: Float[Array, ""]
    evaluations: Int[Array, ""]
    inner_iterations: Int[Array, ""]
    nonfinite: Bool[Array, ""]
    stalled: Bool[Array, ""]


def _evaluate(problem: FlatProblem, z: Array, args: Any, rho: Array):
    """f, c_E, c_I (with bounds), and the stationarity measure at z for penalty ρ."""
    f, c_eq, c_ineq, vjp = linearise(problem, z, args)
    one = jnp.ones((), z.dtype)
    (grad_f,) = vjp((one, jnp.zeros_like(c_eq), jnp.zeros_like(c_ineq)))
    (grad_p,) = vjp((one, rho * c_eq, rho * jnp.maximum(c_ineq, 0)))
    scale = jnp.maximum(1.0, jnp.max(jnp.abs(grad_f), initial=0.0))
    stationarity = jnp.max(jnp.abs(grad_p), initial=0.0) / scale
    return f, c_eq, c_ineq, stationarity, scale


class Penalty(AbstractSolver):
    """Quadratic penalty with continuation (see the module docstring).

    Attributes:
        opt_tol: stationarity tolerance (relative to max(1, ||∇f||_∞)).
        viol_tol: feasibility tolerance on the max violation.
        rho0, rho_growth, rho_max: initial penalty, growth factor, cap.
        max_steps: outer iterations (penalty updates).
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

    @property
    def steps(self) -> int:
        return self.max_steps

    def _optimizer(self) -> optax.GradientTransformation:
        return default_optimizer() if self.optimizer is None else self.optimizer

    def init(self, problem: FlatProblem, z0: Array, args: Any, warm_start: Any) -> PenaltyState:
        dtype = problem.dtype
        rho = jnp.asarray(self.rho0, dtype) if warm_start is None else warm_start.rho
        f, c_eq, c_ineq, stationarity, _ = _evaluate(problem, z0, args, rho)
        zero_i = jnp.asarray(0, jnp.int32)
        return PenaltyState(
            z=z0,
            f=f,
            c_eq=c_eq,
            c_ineq=c_ineq,
            rho=rho,
            rho_z=rho,
            violation=max_violation(c_eq, c_ineq),
            stationarity=stationarity,
            step_norm=jnp.zeros((), dtype),
            evaluations=jnp.asarray(1, jnp.int32),
            inner_iterations=zero_i,
            nonfinite=~(jnp.isfinite(f) & jnp.all(jnp.isfinite(c_eq)) & jnp.all(jnp.isfinite(jnp.maximum(c_ineq, 0)))),
            stalled=jnp.asarray(False),
        )

    def step(self, problem: FlatProblem, state: PenaltyState, args: Any) -> PenaltyState:
        dtype = problem.dtype
        rho = state.rho

        def merit(z):
            f = problem.objective(z, args)
            c_eq, c_ineq = problem.eq(z, args), inequalities_with_bounds(problem, z, args)
            return f + formulations.quadratic_penalty_terms(c_eq, c_ineq, rho)

        _, _, _, _, scale = _evaluate(problem, state.z, args, rho)
        inner_tol = 0.1 * dtype_tol(self.opt_tol, dtype) * scale
        result = minimise(merit, state.z, self._optimizer(), self.inner_max_steps, inner_tol)
        z = result.z
        f, c_eq, c_ineq, stationarity, _ = _evaluate(problem, z, args, rho)
        violation = max_violation(c_eq, c_ineq)
        finite = jnp.isfinite(f) & jnp.isfinite(violation) & jnp.isfinite(stationarity)
        viol_tol = dtype_tol(self.viol_tol, dtype)
        rho_max = jnp.asarray(self.rho_max, dtype)
        at_max = rho >= rho_max
        new_rho = jnp.where(violation > viol_tol, jnp.minimum(rho * self.rho_growth, rho_max), rho)
        step_norm = jnp.max(jnp.abs(z - state.z), initial=0.0)
        new = PenaltyState(
            z=z,
            f=f,
            c_eq=c_eq,
            c_ineq=c_ineq,
            rho=new_rho,
            rho_z=rho,
            violation=violation,
            stationarity=stationarity,
            step_norm=step_norm,
            evaluations=state.evaluations + result.evaluations + 2,
            inner_iterations=state.inner_iterations + result.iterations,
            nonfinite=~finite,
            stalled=(step_norm == 0) & (new_rho == rho),  # nothing can change any more
        )
        # A non-finite outcome keeps the last good point and says so.
        return jax.tree_util.tree_map(
            lambda a, b: jnp.where(finite, a, b),
            new,
            eqx.tree_at(lambda s: s.nonfinite, state, ~finite),
        )

    def terminate(self, problem: FlatProblem, state: PenaltyState, args: Any):
        dtype = problem.dtype
        feasible = state.violation <= dtype_tol(self.viol_tol, dtype)
        stationary = state.stationarity <= dtype_tol(self.opt_tol, dtype)
        converged = feasible & stationary
        unbounded = feasible & (state.f < self.unbounded_below)
        infeasible = ~feasible & (state.rho >= self.rho_max) & (stationary | state.stalled)
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
