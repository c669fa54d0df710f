"""`jc.solve`: the one front door. Validates, flattens, drives a solver, unflattens.

The compiled part (`_solve`) is an `equinox.filter_jit`: arrays in the problem, x0,
solver, args and warm_start are its dynamic inputs, everything else (the problem's
functions, shapes, `max_steps`, `verbose`, non-array args) its cache key. A second eager
call with the same problem and solver and inputs of the same shapes reuses the
compilation instead of tracing again; under a user's `jax.jit` or `jax.vmap` the solve
is traced into the enclosing computation as usual.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from jconstrain import _implicit as implicit, _printer as printer, _validation as validation
from jconstrain._problem import FlatProblem, Problem, flatten
from jconstrain._solution import Multipliers, Solution, Stats, Status, StopCause
from jconstrain._solvers.base import AbstractSolver, Report

try:  # whether any JAX transformation is being traced right now
    from jax._src.core import trace_state_clean as _eager
except ImportError:  # pragma: no cover - a JAX without it: always hoist (slower, same answers)
    _eager = lambda: False


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

    Compilation is cached: calling `solve` again with the same `problem` object, an equal
    solver and x0, args (array leaves) and warm_start of the same shapes and dtypes runs
    the compiled solve without tracing. Non-array leaves of `args` (Python numbers) are
    part of the cache key: pass `jnp.asarray(a)` to reuse one compilation across values.
    Solver settings given as Python floats are passed as arrays, so changing them does
    not recompile.

    Derivatives: `sol.x`, `sol.f` and `sol.multipliers` are differentiable with respect to
    `args`, bounds and arrays the problem's functions close over, by implicit
    differentiation of the optimality conditions at the returned point, not through the
    iterations (see the solver's `adjoint`): the loop runs on stop-gradient inputs, so x0
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
    validation.check_problem_data(problem, x0)
    if isinstance(warm_start, Solution):
        warm_start = warm_start.state
    if not _eager():
        # Traced arrays the functions close over become args, so that they are cut from
        # the loop and differentiated implicitly. Eagerly no tracer exists: skip the trace.
        problem, args = implicit.hoist_closures(problem, x0, args)
    steps = solver.steps if max_steps is None else int(max_steps)
    return _solve(problem, x0, _dynamic_settings(solver), args, warm_start, steps, bool(verbose))


def _dynamic_settings(solver: AbstractSolver) -> AbstractSolver:
    """The solver with its Python-float settings as 0-d arrays (dynamic under `_solve`'s
    filter_jit, as they already are under a sweep's vmap)."""
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v) if isinstance(v, float) else v, solver)


@eqx.filter_jit
def _solve(
    problem: Problem, x0: Any, solver: AbstractSolver, args: Any, warm_start: Any, steps: int, verbose: bool
) -> Solution:
    """The compiled solve: the functions' checks at x0 (once per compilation), the flat
    view, the solver's loop and the differentiable `Solution`."""
    validation.check_functions(problem, x0, args)
    flat, z0 = flatten(problem, x0, args)
    # The loop sees no derivatives: they come from the solver's adjoint at the returned point.
    differentiable_flat, differentiable_args = flat, args
    flat, z0, args = implicit.stop_problem_gradient(flat), implicit.stop_gradient(z0), implicit.stop_gradient(args)
    warm_start = implicit.stop_gradient(warm_start)
    if warm_start is not None:
        expected = eqx.filter_eval_shape(lambda z, a: solver.init(flat, z, a, None), z0, args)
        validation.check_warm_start(warm_start, expected)
    state, k, status = _run(solver, flat, z0, args, warm_start, steps, verbose)
    report = solver.report(flat, state, args)
    cause = jnp.where(status == Status.STALLED, report.stop_cause, StopCause.NONE).astype(jnp.int32)
    if verbose:
        status = printer.summary(status, k, report.f, report.violation, cause)  # passed through
    point = implicit.SolutionPoint(report.z, report.f, report.y_eq, report.y_ineq, report.z_lower, report.z_upper)
    point = solver.adjoint(differentiable_flat, point, status, differentiable_args)
    return _solution(flat, report, point, status, cause, k, state)


def _run(
    solver: AbstractSolver, flat: FlatProblem, z0: jax.Array, args: Any, warm_start: Any, steps: int, verbose: bool
) -> tuple[Any, jax.Array, jax.Array]:
    """The solver's loop: init, then step while not done and k < steps.
    Returns (final state, iterations taken, status)."""
    state = solver.init(flat, z0, args, warm_start)
    done, status = solver.terminate(flat, state, args)
    bad_start = ~jnp.all(jnp.isfinite(z0))
    empty_box = jnp.any(flat.lower > flat.upper)
    status = jnp.where(bad_start, Status.NONFINITE, jnp.where(empty_box, Status.INFEASIBLE, status))
    done = done | bad_start | empty_box
    k0 = jnp.asarray(0, jnp.int32)
    if verbose:
        printer.header(type(solver).__name__, solver.penalty_label)
        k0 = _print_row(solver, state, k0)  # the counter passes through the printer

    def cond(carry):
        k, _, done, _ = carry
        return (~done) & (k < steps)

    # Under vmap the body runs for finished members too (the loop discards their result):
    # `active` lets their inner loops stop at once.
    def body(carry):
        k, state, done_before, _ = carry
        state = solver.step(flat, state, args, active=~done_before)
        done, status = solver.terminate(flat, state, args)
        k = k + 1
        if verbose:  # under vmap the body also runs for finished members: they stay quiet
            k = _print_row(solver, state, k, active=~done_before)
        return k, state, done, status

    carry = (k0, state, done, jnp.asarray(status, jnp.int32))
    k, state, done, status = jax.lax.while_loop(cond, body, carry)
    return state, k, jnp.where(done, status, Status.MAX_STEPS).astype(jnp.int32)


def _print_row(solver: AbstractSolver, state: Any, k: jax.Array, active: Any = True) -> jax.Array:
    """Print the row of iteration k; returns k (passed through the printer's callback)."""
    p = solver.progress(state)
    return printer.row(k, p.f, p.violation, p.stationarity, p.step, p.penalty, active=active)


def _solution(
    flat: FlatProblem,
    report: Report,
    point: implicit.SolutionPoint,
    status: jax.Array,
    cause: jax.Array,
    k: jax.Array,
    state: Any,
) -> Solution:
    """The user-facing `Solution`: `point` (the differentiable x, f and multipliers) in the
    user's pytrees, with the report's statistics."""
    multipliers = Multipliers(
        eq=flat.unravel_eq(point.y_eq) if flat.unravel_eq is not None else None,
        ineq=flat.unravel_ineq(point.y_ineq) if flat.unravel_ineq is not None else None,
        lower=flat.to_pytree(point.z_lower),
        upper=flat.to_pytree(point.z_upper),
    )
    stats = Stats(
        iterations=k,
        evaluations=report.evaluations,
        stationarity=report.stationarity,
        violation=report.violation,
        inner_iterations=report.inner_iterations,
        stop_cause=cause,
    )
    return Solution(
        x=flat.to_pytree(point.z),
        f=point.f,
        status=status,
        multipliers=multipliers,
        stats=stats,
        state=state,
    )
