"""The problem a user states, and its flat-vector view used by every solver.

    minimise f(x, args)  subject to  eq(x, args) == 0,  ineq(x, args) <= 0,
                                     lower <= x <= upper.

`Problem` holds the user's own functions and bounds. `FlatProblem` is built once per
solve: the variables (the inexact-array leaves of x) are raveled into one vector z,
constraint outputs into vectors c_E and c_I, bounds into vectors l and u. Solvers
only ever see z; users only ever see their own pytrees.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree


class Problem(eqx.Module):
    """A constrained optimisation problem over a pytree x.

    Attributes:
        objective: `f(x, args) -> scalar`.
        eq: optional `eq(x, args) -> pytree of arrays`; every element is one
            constraint `== 0`.
        ineq: optional `ineq(x, args) -> pytree of arrays`; every element is one
            constraint `<= 0`.
        bounds: optional `(lower, upper)`; each side is None, a scalar, or a pytree
            shaped like x's variables whose leaves broadcast to the variables'
            shapes. ±inf means unbounded.
    """

    objective: Callable[..., Any]
    eq: Callable[..., Any] | None = None
    ineq: Callable[..., Any] | None = None
    bounds: tuple[Any, Any] | None = None


def _ravel_output(out: PyTree) -> Float[Array, " m"]:
    return ravel_pytree(out)[0]


class FlatProblem(eqx.Module):
    """`Problem` seen on one flat vector z of the variables (built by `flatten`).

    Attributes:
        n, m_eq, m_ineq: numbers of variables, equalities and inequalities.
        lower, upper: (n,) bound vectors, ±inf where unbounded.
        dtype: the floating dtype of z (x0's), kept throughout the solve.
        has_bounds: whether the problem states bounds at all (static).
    """

    objective: Callable[[Array, Any], Array] = eqx.field(static=True)
    eq: Callable[[Array, Any], Array] = eqx.field(static=True)
    ineq: Callable[[Array, Any], Array] = eqx.field(static=True)
    to_pytree: Callable[[Array], Any] = eqx.field(static=True)
    unravel_eq: Callable[[Array], Any] | None = eqx.field(static=True)
    unravel_ineq: Callable[[Array], Any] | None = eqx.field(static=True)
    lower: Float[Array, " n"]
    upper: Float[Array, " n"]
    n: int = eqx.field(static=True)
    m_eq: int = eqx.field(static=True)
    m_ineq: int = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    has_bounds: bool = eqx.field(static=True)


def variables(x: PyTree) -> tuple[PyTree, PyTree]:
    """Split x into (variables, static): variables are its inexact-array leaves."""
    return eqx.partition(x, eqx.is_inexact_array)


def bound_leaves(side: Any, x0: PyTree, name: str) -> list[Any] | None:
    """One side of the bounds as a list aligned with the variable leaves of x0.

    `side` may be None (no bound), a scalar (the same bound for every variable), a
    pytree shaped like x0's variables, or a pytree shaped like x0 itself (then its
    entries at x0's non-variable leaves are ignored). Raises ValueError naming `name`.
    """
    if side is None:
        return None
    x_leaves, x_struct = jax.tree_util.tree_flatten(x0)
    is_var = [eqx.is_inexact_array(leaf) for leaf in x_leaves]
    n_var = sum(is_var)
    side_leaves, side_struct = jax.tree_util.tree_flatten(side)
    if side_struct == jax.tree_util.tree_structure(0.0):
        return side_leaves * n_var
    if side_struct == x_struct:
        return [b for b, v in zip(side_leaves, is_var) if v]
    params_struct = jax.tree_util.tree_structure(variables(x0)[0])
    if side_struct == params_struct:
        return side_leaves
    raise ValueError(
        f"{name} must be None, a scalar, or a pytree with the structure of x0 "
        f"(or of x0's array variables); got structure {side_struct}, x0 has {x_struct}."
    )


def _bound_vector(leaves: list[Any] | None, params: list[Array], fill: float, dtype) -> Array:
    """Broadcast one side of the bounds to an (n,) vector; `fill` where it is None."""
    if not params:
        return jnp.zeros((0,), dtype)
    if leaves is None:
        leaves = [fill] * len(params)
    parts = [jnp.broadcast_to(jnp.asarray(b, dtype), jnp.shape(p)) for b, p in zip(leaves, params)]
    return jnp.concatenate([jnp.ravel(p) for p in parts])


def flatten(problem: Problem, x0: PyTree, args: Any) -> tuple[FlatProblem, Array]:
    """Build the flat view of `problem` around x0; return it and z0 = ravel(x0's variables).

    Input validation happens before (see `jconstrain._validation`); this function
    assumes well-formed input.
    """
    params, static = variables(x0)
    z0, unravel = ravel_pytree(params)
    dtype = z0.dtype

    def to_pytree(z: Array) -> PyTree:
        return eqx.combine(unravel(z), static)

    def objective(z: Array, a: Any) -> Array:
        return jnp.asarray(problem.objective(to_pytree(z), a), dtype).reshape(())

    def constraint(fn: Callable | None) -> tuple[Callable, Callable | None, int]:
        if fn is None:
            return (lambda z, a: jnp.zeros((0,), dtype)), None, 0
        out = eqx.filter_eval_shape(fn, to_pytree(z0), args)
        m = sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(out))
        example = jax.tree_util.tree_map(lambda s: jnp.zeros(jnp.shape(s), dtype), out)
        _, unravel_out = ravel_pytree(example)

        def flat_fn(z: Array, a: Any) -> Array:
            leaves = jax.tree_util.tree_leaves(fn(to_pytree(z), a))
            if not leaves:
                return jnp.zeros((0,), dtype)
            return jnp.concatenate([jnp.ravel(jnp.asarray(l, dtype)) for l in leaves])

        return flat_fn, unravel_out, m

    eq, unravel_eq, m_eq = constraint(problem.eq)
    ineq, unravel_ineq, m_ineq = constraint(problem.ineq)
    lower_side, upper_side = problem.bounds if problem.bounds is not None else (None, None)
    param_leaves = jax.tree_util.tree_leaves(params)
    lower = _bound_vector(bound_leaves(lower_side, x0, "lower bound"), param_leaves, -jnp.inf, dtype)
    upper = _bound_vector(bound_leaves(upper_side, x0, "upper bound"), param_leaves, jnp.inf, dtype)
    flat = FlatProblem(
        objective=objective,
        eq=eq,
        ineq=ineq,
        to_pytree=to_pytree,
        unravel_eq=unravel_eq,
        unravel_ineq=unravel_ineq,
        lower=lower,
        upper=upper,
        n=int(z0.size),
        m_eq=m_eq,
        m_ineq=m_ineq,
        dtype=dtype,
        has_bounds=lower_side is not None or upper_side is not None,
    )
    return flat, z0


def bound_residuals(
    z: Float[Array, " n"], lower: Float[Array, " n"], upper: Float[Array, " n"]
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """(l - z, z - u) with -inf where a bound is infinite; both <= 0 means within bounds."""
    below = jnp.where(jnp.isfinite(lower), lower - z, -jnp.inf)
    above = jnp.where(jnp.isfinite(upper), z - upper, -jnp.inf)
    return below, above


def max_violation(
    c_eq: Float[Array, " me"],
    c_ineq: Float[Array, " mi"],
    z: Float[Array, " n"] | None = None,
    lower: Float[Array, " n"] | None = None,
    upper: Float[Array, " n"] | None = None,
) -> Float[Array, ""]:
    """viol_inf = max(max|c_E|, max(c_I, 0), max(l - z, 0), max(z - u, 0))."""
    parts = [jnp.abs(c_eq), jnp.maximum(c_ineq, 0)]
    if z is not None:
        below, above = bound_residuals(z, lower, upper)
        parts += [jnp.maximum(below, 0), jnp.maximum(above, 0)]
    dtype = c_eq.dtype
    return jnp.max(jnp.concatenate([jnp.zeros((1,), dtype)] + [p.astype(dtype) for p in parts]))


def l1_violation(c_eq: Float[Array, " me"], c_ineq: Float[Array, " mi"]) -> Float[Array, ""]:
    """v = ||c_E||_1 + ||max(c_I, 0)||_1, the exact-penalty violation."""
    return jnp.sum(jnp.abs(c_eq)) + jnp.sum(jnp.maximum(c_ineq, 0))


def inequalities_with_bounds(problem: FlatProblem, z: Float[Array, " n"], args: Any) -> Float[Array, " mb"]:
    """c_I(z) followed, when the problem has bounds, by l - z and z - u (-inf where infinite).

    For methods that treat bounds as ordinary inequality constraints.
    """
    c_ineq = problem.ineq(z, args)
    if not problem.has_bounds:
        return c_ineq
    below, above = bound_residuals(z, problem.lower, problem.upper)
    return jnp.concatenate([c_ineq, below, above])


def split_bound_multipliers(
    problem: FlatProblem, nu_all: Float[Array, " mb"]
) -> tuple[Float[Array, " mi"], Float[Array, " n"], Float[Array, " n"]]:
    """Inverse of `inequalities_with_bounds` for multipliers: (ν_I, ν_lower, ν_upper)."""
    m, n = problem.m_ineq, problem.n
    if not problem.has_bounds:
        zeros = jnp.zeros((n,), nu_all.dtype)
        return nu_all, zeros, zeros
    return nu_all[:m], nu_all[m : m + n], nu_all[m + n :]


def linearise(
    problem: FlatProblem, z: Float[Array, " n"], args: Any
) -> tuple[Float[Array, ""], Float[Array, " me"], Float[Array, " mb"], Callable]:
    """f, c_E and c_I (bounds included, see `inequalities_with_bounds`) at z, with the VJP
    of z -> (f, c_E, c_I): `vjp((a, λ, ν))[0]` is a ∇f + J_Eᵀλ + J_Iᵀν, one reverse pass
    for any weighting of the objective and all constraints."""
    parts = lambda z: (problem.objective(z, args), problem.eq(z, args), inequalities_with_bounds(problem, z, args))
    (f, c_eq, c_ineq), vjp = jax.vjp(parts, z)
    return f, c_eq, c_ineq, vjp
