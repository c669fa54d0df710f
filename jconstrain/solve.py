"""`jc.solve`: the one front door. Validates, flattens, drives a solver, unflattens."""

from __future__ import annotations

import inspect
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from jconstrain import implicit, printer, validation
from jconstrain.problem import FlatProblem, Problem, flatten
from jconstrain.solution import Multipliers, Solution, Stats, Status
from jconstrain.solvers.base import AbstractSolver, Report
from jconstrain.solvers.projected import ProjectedGradient, flat_projection


def solve(
    problem: Problem,
    x0: Any,
    solver: AbstractSolver,
    args: Any = None,
    *,
    max_steps: int | None = None,
    verbose: bool = False,
    warm_start: Any = None,
) -> Solution:
    """Solve `problem` from x0 with `solver`.

    Pure: compose it with `jax.jit`, `jax.vmap` and `jax.grad`. The whole solve is one
    `lax.while_loop` over the solver's state; `verbose=True` prints an iteration table
    through `jax.debug.callback` (works under jit).

    Derivatives: `sol.x`, `sol.f` and `sol.multipliers` are differentiable with respect to
    `args`, bounds and arrays the problem's functions close over, by implicit
    differentiation of the optimality conditions at the returned point, not through the
    iterations (see `jconstrain.implicit`): the loop runs on stop-gradient inputs, so x0
    and warm_start get zero derivatives.

    Args:
        problem: a `jc.Problem`.
        x0: the starting point, any pytree (an `equinox.Module` too: only its
            inexact-array leaves are variables).
        solver: e.g. `jc.SQP()`, `jc.Penalty()`.
        args: passed to the problem's functions as their second argument.
        max_steps: cap on outer iterations; overrides the solver's own.
        verbose: print the iteration table and a final summary line.
        warm_start: the `state` of an earlier `Solution` of the same solver and problem
            (or that `Solution` itself): reuses e.g. BFGS memory and penalty parameters.

    Returns:
        A `jc.Solution` describing the returned point.
    """
    validation.check_options(solver, max_steps, verbose)
    x0 = validation.normalise_x0(x0)
    validation.check_problem(problem, x0, args)
    problem, args = implicit.hoist_closures(problem, x0, args)
    flat, z0 = flatten(problem, x0, args)
    if isinstance(warm_start, Solution):
        warm_start = warm_start.state
    # The loop sees no derivatives: they come from `implicit` at the returned point.
    differentiable_flat, differentiable_args = flat, args
    flat, z0, args = implicit.stop_problem_gradient(flat), implicit.stop_gradient(z0), implicit.stop_gradient(args)
    warm_start = implicit.stop_gradient(warm_start)
    if warm_start is not None:
        expected = eqx.filter_eval_shape(lambda z, a: solver.init(flat, z, a, None), z0, args)
        validation.check_warm_start(warm_start, expected)
    steps = solver.steps if max_steps is None else int(max_steps)
    name = type(solver).__name__

    state = solver.init(flat, z0, args, warm_start)
    done, status = solver.terminate(flat, state, args)
    bad_start = ~jnp.all(jnp.isfinite(z0))
    empty_box = jnp.any(flat.lower > flat.upper)
    status = jnp.where(bad_start, Status.NONFINITE, jnp.where(empty_box, Status.INFEASIBLE, status))
    done = done | bad_start | empty_box
    k0 = jnp.asarray(0, jnp.int32)
    if verbose:
        printer.header(name, solver.penalty_label)
        k0 = _print_row(solver, state, k0)  # the counter passes through the printer

    def cond(carry):
        k, _, done, _ = carry
        return (~done) & (k < steps)

    # Under vmap the body runs for finished members too (the loop discards their result):
    # `active` lets their inner loops stop at once. Solvers written to the older protocol,
    # step(problem, state, args), are driven without it.
    takes_active = "active" in inspect.signature(solver.step).parameters

    def body(carry):
        k, state, done_before, _ = carry
        if takes_active:
            state = solver.step(flat, state, args, active=~done_before)
        else:
            state = solver.step(flat, state, args)
        done, status = solver.terminate(flat, state, args)
        k = k + 1
        if verbose:  # under vmap the body also runs for finished members: they stay quiet
            k = _print_row(solver, state, k, active=~done_before)
        return k, state, done, status

    carry = (k0, state, done, jnp.asarray(status, jnp.int32))
    k, state, done, status = jax.lax.while_loop(cond, body, carry)
    status = jnp.where(done, status, Status.MAX_STEPS).astype(jnp.int32)
    report = solver.report(flat, state, args)
    if verbose:
        status = printer.summary(status, k, report.f, report.violation)
    report = _differentiable(solver, differentiable_flat, report, status, differentiable_args)
    return _solution(flat, report, status, k, state)


def _differentiable(solver: AbstractSolver, flat: FlatProblem, report: Report, status: jax.Array, args: Any) -> Report:
    """The report with z, f and the multipliers differentiable in (args, bounds): the
    identity unless differentiated (`jconstrain.implicit`)."""
    point = implicit.SolutionPoint(report.z, report.f, report.y_eq, report.y_ineq, report.z_lower, report.z_upper)
    if isinstance(solver, ProjectedGradient):
        project = lambda p, z: flat_projection(p, solver.projection)(z)
        point = implicit.fixed_point_solution(flat, point, status, args, project)
    else:
        point = implicit.kkt_solution(flat, point, status, args)
    fields = ("z", "f", "y_eq", "y_ineq", "z_lower", "z_upper")
    return eqx.tree_at(lambda r: [getattr(r, name) for name in fields], report, [getattr(point, name) for name in fields])


def _print_row(solver: AbstractSolver, state: Any, k: jax.Array, active: Any = True) -> jax.Array:
    """Print the row of iteration k; returns k (passed through the printer's callback)."""
    p = solver.progress(state)
    return printer.row(k, p.f, p.violation, p.stationarity, p.step, p.penalty, active=active)


def _solution(flat: FlatProblem, report: Report, status: jax.Array, k: jax.Array, state: Any) -> Solution:
    multipliers = Multipliers(
        eq=flat.unravel_eq(report.y_eq) if flat.unravel_eq is not None else None,
        ineq=flat.unravel_ineq(report.y_ineq) if flat.unravel_ineq is not None else None,
        lower=flat.to_pytree(report.z_lower),
        upper=flat.to_pytree(report.z_upper),
    )
    stats = Stats(
        iterations=k,
        evaluations=report.evaluations,
        stationarity=report.stationarity,
        violation=report.violation,
        inner_iterations=report.inner_iterations,
    )
    return Solution(
        x=flat.to_pytree(report.z),
        f=report.f,
        status=status,
        multipliers=multipliers,
        stats=stats,
        state=state,
    )
