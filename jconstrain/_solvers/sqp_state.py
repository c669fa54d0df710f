"""jc.SQP's loop state, the records it keeps of visited points, and its report.

`SQPState` carries the model at the current iterate, H, μ, the gradient samples, the
best feasible and the most feasible points seen (`Tracked`), the prescaling and the
counters the statuses are decided from. `Direction` is what one iteration chose.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jconstrain._misc import inf_norm, tree_where
from jconstrain._problem import FlatProblem
from jconstrain._solution import StopCause
from jconstrain._solvers import sqp_hessian as hessian
from jconstrain._solvers.base import Report, dtype_tol, escape_point
from jconstrain._solvers.sqp_model import Model, Rows, Tracked, all_finite, evaluate, merit_values, prescaling, scaled
from jconstrain._solvers.sqp_model import stacked_rows, tracked_record
from jconstrain._solvers.sqp_stationarity import Samples, first_samples


class SQPState(eqx.Module):
    model: Model
    H: hessian.InverseHessian
    mu: Float[Array, ""]
    violation: Float[Array, ""]
    stationarity: Float[Array, ""]
    y_stat: Float[Array, " m"]
    samples: Samples
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


class Direction(eqx.Module):
    """What `sqp_direction` chose: d, the QP's dual y, whether the QP succeeded, the
    (steered) μ, the feasibility reference l_ref, whether steering ran out of μ
    reductions, and the predicted decrease Δ of φ."""

    d: Float[Array, " n"]
    y: Float[Array, " m"]
    qp_ok: Bool[Array, ""]
    mu: Float[Array, ""]
    l_ref: Float[Array, ""]
    exhausted: Bool[Array, ""]
    decrease: Float[Array, ""]


def initial_state(
    model: Model, rows: Rows, H: hessian.InverseHessian, mu: Array, scale: tuple[Array, Array], samples: Samples,
    iteration: Int[Array, ""], viol_tol: Array,
) -> SQPState:
    """The state at the first (scaled) model: nothing measured yet (stationarity = inf:
    it is first measured after a step, one QP fewer to compile), x0 both the best and the
    most feasible point."""
    dtype = model.f.dtype
    scale_f, scale_c = scale
    stationarity, y_stat = jnp.asarray(jnp.inf, dtype), jnp.zeros(model.c.shape, dtype)
    tracked = tracked_record(model, rows, scale_f, scale_c, stationarity, y_stat)
    feasible = tracked.violation <= dtype_tol(viol_tol, dtype)
    zero = jnp.asarray(0, jnp.int32)
    no = jnp.asarray(False)
    return SQPState(
        model=model, H=H, mu=mu, violation=tracked.violation, stationarity=stationarity, y_stat=y_stat,
        samples=samples, best=tracked, most_feasible=tracked, has_feasible=feasible & all_finite(model),
        scale_f=scale_f, scale_c=scale_c, step_size=jnp.zeros((), dtype), step_norm=jnp.zeros((), dtype),
        iteration=iteration, evaluations=jnp.asarray(1, jnp.int32), qp_failures=zero, search_failures=zero,
        infeasible_count=zero, escapes=zero, nonfinite=~all_finite(model), unbounded=no, stalled=no, stop_cause=zero,
    )


def track(state: SQPState, current: Tracked, viol_tol: Array) -> tuple[Array, Tracked, Tracked]:
    """(feasible, best, most_feasible) after visiting `current`: best = lowest f among
    feasible points, most feasible = least l1 violation (ties: lower f)."""
    feasible = current.violation <= dtype_tol(viol_tol, current.f.dtype)
    better = feasible & (~state.has_feasible | (current.f < state.best.f))
    best = tree_where(better, current, state.best)
    more_feasible = (current.l1_violation < state.most_feasible.l1_violation) | (
        (current.l1_violation == state.most_feasible.l1_violation) & (current.f < state.most_feasible.f)
    )
    return feasible, best, tree_where(more_feasible, current, state.most_feasible)


def report(problem: FlatProblem, state: SQPState, rows: Rows, converged: Bool[Array, ""]) -> Report:
    """The converged iterate, else the best feasible one, else the most feasible one, with
    the multipliers unscaled (λ = λ_s scale_c / scale_f) and split by row kind."""
    dtype = problem.dtype
    current = tracked_record(state.model, rows, state.scale_f, state.scale_c, state.stationarity, state.y_stat)
    chosen = tree_where(converged, current, tree_where(state.has_feasible, state.best, state.most_feasible))
    lam = chosen.y * state.scale_c / state.scale_f
    me, mi, n = problem.m_eq, problem.m_ineq, problem.n
    zeros = jnp.zeros((n,), dtype)
    return Report(
        z=chosen.z,
        f=chosen.f,
        y_eq=lam[:me],
        y_ineq=lam[me : me + mi],
        z_lower=lam[me + mi : me + mi + n] if problem.has_bounds else zeros,
        z_upper=lam[me + mi + n :] if problem.has_bounds else zeros,
        stationarity=chosen.stationarity,
        violation=chosen.violation,
        evaluations=state.evaluations,
        inner_iterations=state.iteration,
        stop_cause=jnp.where(state.stalled, state.stop_cause, StopCause.VIOLATION_STATIONARY),
    )


def escape(
    problem: FlatProblem, state: SQPState, args: Any, viol_tol: Array, memory: int | None,
    prescale_threshold: Array | None,
) -> SQPState:
    """`fresh_start` (μ kept: while no feasible point is known, a small μ favours
    feasibility) from a random point near a stuck or stalled infeasible iterate: the k-th
    escape (k = 1, 2, ...) starts from `escape_point` with relative radius
    min(10^(k-3), 10) (1e-2, 1e-1, 1 for the default three, then 10 for any more),
    seeded by the iteration count.

    The radius grows because a local minimiser of the violation holds the iterates within
    its basin, whose size nothing tells. Best and most-feasible tracking carry on (the
    most feasible point re-measured in the new scales), so nothing found is lost.
    """
    dtype = problem.dtype
    rows = stacked_rows(problem)
    z = state.model.z
    radius = jnp.asarray(10.0, dtype) ** jnp.minimum(state.escapes.astype(dtype) - 2.0, 1.0)
    z_new = escape_point(z, radius, state.iteration, problem.lower, problem.upper)
    unscaled = evaluate(problem, z_new, args, jnp.ones((), dtype), jnp.ones_like(state.scale_c))
    here = scaled(state.model, 1 / state.scale_f, 1 / state.scale_c)  # unscaled, to stay where c is not finite
    unscaled = tree_where(all_finite(unscaled), unscaled, here)
    state = fresh_start(state, unscaled, state.mu, prescale_threshold, memory)
    record = state.most_feasible
    _, l1_violation, _ = merit_values(problem, record.z, args, rows, state.mu, state.scale_f, state.scale_c)
    state = eqx.tree_at(lambda s: s.most_feasible.l1_violation, state, l1_violation)
    inf = jnp.asarray(jnp.inf, dtype)
    current = tracked_record(state.model, rows, state.scale_f, state.scale_c, inf, state.y_stat)
    feasible, best, most_feasible = track(state, current, viol_tol)
    return eqx.tree_at(
        lambda s: (
            s.violation, s.best, s.most_feasible, s.has_feasible, s.step_size, s.step_norm, s.iteration,
            s.evaluations, s.escapes,
        ),
        state,
        (
            current.violation, best, most_feasible, state.has_feasible | feasible, jnp.zeros((), dtype),
            inf_norm(state.model.z - z), state.iteration + 1, state.evaluations + 2, state.escapes + 1,
        ),
    )


def fresh_start(
    state: SQPState, unscaled: Model, mu: Array, prescale_threshold: Array | None, memory: int | None
) -> SQPState:
    """The state restarted at the (unscaled) model: prescaled there when
    `prescale_threshold` is set (scales taken at a far x0 can hide a violation: exp(x)
    scaled at x = 23 shrinks its row by 1e-8, and a violation of 16 at x = 2.8 then looks
    stationary), H = I, μ = `mu`, one gradient sample, stationarity unmeasured, no
    failures counted. The records' multipliers move to the new scales with the model;
    their l1 violations are left to the caller."""
    if prescale_threshold is None:  # the scales kept (not all 1 after a warm start)
        scale_f, scale_c = state.scale_f, state.scale_c
    else:
        scale_f, scale_c = prescaling(unscaled, prescale_threshold)
    model = scaled(unscaled, scale_f, scale_c)
    to_new = (scale_f / scale_c) / (state.scale_f / state.scale_c)  # y_s ∝ scale_f / scale_c
    dtype, zero = model.f.dtype, jnp.zeros((), jnp.int32)
    return eqx.tree_at(
        lambda s: (
            s.model, s.H, s.mu, s.stationarity, s.y_stat, s.samples, s.best.y, s.most_feasible.y, s.scale_f,
            s.scale_c, s.search_failures, s.infeasible_count, s.stalled,
        ),
        state,
        (
            model, hessian.identity(model.z.shape[0], dtype, memory), jnp.asarray(mu, dtype),
            jnp.asarray(jnp.inf, dtype), jnp.zeros_like(state.y_stat),
            first_samples(model.z, model.g, state.samples.valid.shape[0]), state.best.y * to_new,
            state.most_feasible.y * to_new, scale_f, scale_c, zero, zero, jnp.asarray(False),
        ),
    )


def after_escape(
    before: SQPState, after: SQPState, mu0: Array, prescale_threshold: Array | None, memory: int | None
) -> SQPState:
    """`after`, or where it is the first feasible point after an escape, a `fresh_start`
    there with μ >= mu0: μ was shrunk, and the scales taken, far from here."""
    first_feasible = after.has_feasible & ~before.has_feasible & (before.escapes > 0)
    unscaled = scaled(after.model, 1 / after.scale_f, 1 / after.scale_c)
    restarted = fresh_start(after, unscaled, jnp.maximum(after.mu, mu0), prescale_threshold, memory)
    return tree_where(first_feasible, restarted, after)
