"""Input checks run by `jc.solve` before anything is compiled.

Structure, shape and dtype errors always raise `TypeError`/`ValueError` naming the
argument. Value checks (non-finite x0, lower > upper) raise only when the values are
concrete; under `jit`/`vmap` the solve reports NONFINITE / INFEASIBLE instead.

The problem's functions are traced once at x0: a function that cannot be called as
fn(x, args), or that raises while traced there (a shape mismatch, a Python `if` on a
traced value, indexing x the wrong way), raises a TypeError naming it, with the
original exception chained as its cause (saying so when args is None: a forgotten
`args=`). The solver's hyperparameters are checked against the kinds of their defaults
here (`check_solver_fields`); their ranges are checked by each solver's own
`__check_init__` when it is built (`jconstrain._checks`).
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jconstrain._problem import Problem, bound_leaves, variables
from jconstrain._solvers.base import AbstractSolver


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _contains_module(tree: Any) -> bool:
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda t: isinstance(t, eqx.Module))
    return any(isinstance(leaf, eqx.Module) for leaf in leaves)


def normalise_x0(x0: Any) -> Any:
    """Check x0 and return it with Python floats turned into arrays and every variable
    strongly typed (a weakly typed array, e.g. `jnp.full(3, 0.1)`, keeps its dtype but
    loses the weak flag, so that it shares a compiled solve with `jnp.zeros(3)`).

    In a plain pytree (dicts, lists, tuples, arrays) every leaf is a variable and must
    be a real floating array or a Python float. In a pytree holding `equinox.Module`s
    (a network), only the inexact-array leaves are variables; other leaves (activation
    functions, integers, Python floats) are kept fixed.
    """
    if _contains_module(x0):
        leaves = [leaf for leaf in jax.tree_util.tree_leaves(x0) if eqx.is_inexact_array(leaf)]
    else:
        path_leaves = jax.tree_util.tree_flatten_with_path(x0)[0]
        for path, leaf in path_leaves:
            where = f"x0{jax.tree_util.keystr(path)}"
            if isinstance(leaf, bool) or not isinstance(leaf, (numbers.Real, np.ndarray, np.generic, jax.Array)):
                raise TypeError(f"{where} must be a floating-point array, got {type(leaf).__name__}.")
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and not isinstance(leaf, float):
                raise TypeError(
                    f"{where} must be a floating-point array, got dtype {jnp.result_type(leaf)}; "
                    "cast it, e.g. jnp.asarray(x, float)."
                )
        x0 = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf) if isinstance(leaf, float) else leaf, x0)
        leaves = jax.tree_util.tree_leaves(x0)
    if not leaves:
        raise ValueError("x0 must contain at least one floating-point array (the variables).")
    for leaf in leaves:
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            raise TypeError(f"x0 must be real; got a leaf of dtype {leaf.dtype}.")
    concrete = [np.asarray(leaf) for leaf in leaves if _is_concrete(leaf)]
    if any(not np.all(np.isfinite(leaf)) for leaf in concrete):
        raise ValueError("x0 contains NaN or Inf; start from a finite point.")
    strong = lambda leaf: leaf.astype(leaf.dtype) if getattr(leaf, "weak_type", False) else leaf
    return jax.tree_util.tree_map(lambda leaf: strong(leaf) if eqx.is_inexact_array(leaf) else leaf, x0)


def _check_output(out: Any, name: str, scalar: bool) -> Any:
    """Raise TypeError/ValueError unless `out` is a (scalar, if asked) real floating array tree."""
    leaves = jax.tree_util.tree_leaves(out)
    if out is None or (scalar and len(leaves) != 1):
        raise TypeError(f"{name} must return {'a scalar array' if scalar else 'a pytree of arrays'}, got {out!r}.")
    for leaf in leaves:
        if isinstance(leaf, bool) or not isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Real)):
            raise TypeError(f"{name} must return arrays, got a leaf of type {type(leaf).__name__}.")
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating) and not isinstance(leaf, numbers.Real):
            raise TypeError(f"{name} must return floating-point arrays, got dtype {dtype}.")
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(f"{name} must return real arrays, got dtype {dtype}.")
    if scalar and jnp.shape(leaves[0]) != ():
        raise ValueError(f"objective must return a scalar (shape ()), got shape {jnp.shape(leaves[0])}.")
    return out


def check_problem_data(problem: Any, x0: Any) -> None:
    """Check the problem's types and bounds (against x0's variables); traces nothing."""
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a jc.Problem, got {type(problem).__name__}.")
    if not callable(problem.objective):
        raise TypeError(f"problem.objective must be callable f(x, args), got {type(problem.objective).__name__}.")
    for name in ("eq", "ineq"):
        fn = getattr(problem, name)
        if fn is not None and not callable(fn):
            raise TypeError(f"problem.{name} must be None or callable {name}(x, args), got {type(fn).__name__}.")
    for name in ("objective", "eq", "ineq"):
        if getattr(problem, name) is not None:
            _check_arity(getattr(problem, name), f"problem.{name}")
    _check_bounds(problem.bounds, x0)


def check_functions(problem: Problem, x0: Any, args: Any) -> None:
    """Trace the problem's functions once at x0 (shapes only, no compilation) and check
    what they return: a scalar objective, pytrees of real floating arrays from eq/ineq."""
    eqx.filter_eval_shape(
        lambda x, a: _check_output(_call(problem.objective, "problem.objective", x, a), "objective", True), x0, args
    )
    for name in ("eq", "ineq"):
        fn = getattr(problem, name)
        if fn is not None:
            eqx.filter_eval_shape(
                lambda x, a, fn=fn, name=f"problem.{name}": _check_output(_call(fn, name, x, a), name, False), x0, args
            )


def check_problem(problem: Any, x0: Any, args: Any) -> None:
    """`check_problem_data` and `check_functions`: every check of the problem."""
    check_problem_data(problem, x0)
    check_functions(problem, x0, args)


def _check_arity(fn: Any, name: str) -> None:
    """Raise TypeError unless fn can be called as fn(x, args)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and C functions without a signature
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise TypeError(f"{name} must accept two arguments, (x, args); its signature is {signature}.") from None


def _call(fn: Any, name: str, x: Any, args: Any) -> Any:
    """fn(x, args) while tracing at x0; an exception from inside fn becomes a TypeError
    naming it (the original is chained as its cause)."""
    try:
        return fn(x, args)
    except Exception as error:
        hint = " (args is None: did you forget jc.solve(..., args=...)?)" if args is None else ""
        raise TypeError(
            f"{name} raised {type(error).__name__} when called as {name}(x0, args){hint}: {error}"
        ) from error


def _check_bounds(bounds: Any, x0: Any) -> None:
    if bounds is None:
        return
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise TypeError("problem.bounds must be None or a pair (lower, upper).")
    params = jax.tree_util.tree_leaves(variables(x0)[0])
    sides = []
    for side, name in zip(bounds, ("lower bound", "upper bound")):
        leaves = bound_leaves(side, x0, name)
        if leaves is None:
            sides.append(None)
            continue
        for b, p in zip(leaves, params):
            if isinstance(b, bool) or not isinstance(b, (jax.Array, np.ndarray, np.generic, numbers.Real)):
                raise TypeError(f"{name} leaves must be numbers or arrays, got {type(b).__name__}.")
            if not jnp.issubdtype(jnp.result_type(b), jnp.number) or jnp.issubdtype(jnp.result_type(b), jnp.complexfloating):
                raise TypeError(f"{name} must be real, got dtype {jnp.result_type(b)}.")
            try:
                broadcasts = np.broadcast_shapes(jnp.shape(b), jnp.shape(p)) == jnp.shape(p)
            except ValueError:
                broadcasts = False
            if not broadcasts:
                raise ValueError(
                    f"{name} of shape {jnp.shape(b)} does not broadcast to its variable's shape {jnp.shape(p)}."
                )
            if _is_concrete(b) and np.any(np.isnan(np.asarray(b))):
                raise ValueError(f"{name} contains NaN; use ±inf for no bound.")
        sides.append(leaves)
    lower, upper = sides
    if lower is None or upper is None:
        return
    for lo, up in zip(lower, upper):
        if _is_concrete(lo) and _is_concrete(up) and np.any(np.asarray(lo) > np.asarray(up)):
            raise ValueError("problem.bounds has lower > upper somewhere; the box is empty.")


def check_options(solver: Any, max_steps: Any, verbose: Any) -> None:
    if not isinstance(solver, AbstractSolver):
        raise TypeError(f"solver must be a jconstrain solver such as jc.SQP(), got {type(solver).__name__}.")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral)):
        raise TypeError(f"max_steps must be None or an int, got {type(max_steps).__name__}.")
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}.")
    if not isinstance(verbose, (bool, np.bool_)):
        raise TypeError(f"verbose must be a bool, got {type(verbose).__name__}.")
    check_solver_fields(solver)


def check_solver_fields(solver: AbstractSolver) -> None:
    """Raise TypeError/ValueError naming the field unless every hyperparameter has the
    kind of its default: a real scalar for float fields (a Python number or a 0-d real
    array, traced ones included, so that sweeps can vmap over them; not NaN), an int for
    integer fields, a bool for flags, an optax transformation for `optimizer`. Ranges
    (tolerances >= 0, 0 < c1 < c2 < 1, ...) are each solver's own `__check_init__`."""
    label = type(solver).__name__
    for field in dataclasses.fields(solver):
        if field.default is dataclasses.MISSING or field.name == "projection":
            continue
        value = getattr(solver, field.name)
        where = f"{label}.{field.name}"
        default = field.default
        if field.name == "optimizer":
            if value is not None and not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
                raise TypeError(f"{where} must be None or an optax GradientTransformation, got {type(value).__name__}.")
        elif isinstance(default, bool):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{where} must be a bool, got {type(value).__name__}.")
        elif isinstance(default, int) or (default is None and field.metadata.get("static", False)):
            _check_int_field(where, value, allow_none=default is None)
        elif isinstance(default, float):
            _check_float_field(where, value)


def _check_int_field(where: str, value: Any, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where} must be an int{' or None' if allow_none else ''}, got {type(value).__name__}.")


def _check_float_field(where: str, value: Any) -> None:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where} must be a real number, got bool.")
    if isinstance(value, numbers.Real):
        concrete = np.asarray(value, float)
    elif isinstance(value, (jax.Array, np.ndarray, np.generic)):
        dtype = jnp.result_type(value)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise TypeError(f"{where} must be a real number, got an array of dtype {dtype}.")
        if jnp.ndim(value) != 0:
            raise ValueError(
                f"{where} must be a scalar, got shape {jnp.shape(value)} (to sweep it, jax.vmap over the solver)."
            )
        concrete = np.asarray(value, float) if _is_concrete(value) else None
    else:
        raise TypeError(f"{where} must be a real number, got {type(value).__name__}.")
    if concrete is not None and np.isnan(concrete):
        raise ValueError(f"{where} is NaN.")


def check_warm_start(warm_start: Any, expected: Any) -> None:
    """Raise ValueError unless `warm_start` has the structure and shapes of `expected`."""
    got_struct = jax.tree_util.tree_structure(warm_start)
    want_struct = jax.tree_util.tree_structure(expected)
    if got_struct != want_struct:
        raise ValueError(
            "warm_start must be the `state` of a previous Solution of the same solver and problem "
            f"(expected {type(expected).__name__})."
        )
    for got, want in zip(jax.tree_util.tree_leaves(warm_start), jax.tree_util.tree_leaves(expected)):
        if jnp.shape(got) != want.shape:
            raise ValueError(
                f"warm_start does not match this problem: a state leaf has shape {jnp.shape(got)}, expected {want.shape}."
            )
