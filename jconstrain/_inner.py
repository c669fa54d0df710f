"""Unconstrained inner minimisation with an optax optimiser, as one `lax.while_loop`.

Penalty and augmented-Lagrangian solvers minimise a smooth merit function
m(z) (their subproblem) approximately at every outer iteration:

    z_{k+1} = z_k + u_k,   u_k = optimizer.update(∇m(z_k), ...),

until ||∇m(z)||_∞ <= tol, the optimiser makes no move, no finite way on is left, m
falls below `value_floor` (the caller's sign of an unbounded subproblem; -inf by
default), or `max_steps` iterations pass. Line-search optimisers such as `optax.lbfgs()`
receive `value`, `grad` and `value_fn` as extra arguments, and their cached value and
gradient are reused.

Non-finite values: with `max_backtracks` > 0 (the penalty and augmented-Lagrangian
solvers use `NONFINITE_BACKTRACKS`), an update whose end point has a NaN/Inf value or
gradient (e.g. log of a negative number on a step of an optimiser without a line search,
or one that its line search accepted) is backtracked, z + 2^-j u for j = 1, ...,
`max_backtracks`, to the first point with finite value and gradient and m <= m(z); the
optimiser's state restarts there (its memory described the rejected step). If there is
no such point (or `max_backtracks` = 0) the run stops at z, its last finite point, with
`nonfinite` set.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from jconstrain._misc import inf_norm


class InnerResult(eqx.Module):
    """Where the inner minimisation stopped."""

    z: Float[Array, " n"]
    value: Float[Array, ""]
    grad: Float[Array, " n"]
    iterations: Int[Array, ""]
    evaluations: Int[Array, ""]
    nonfinite: Bool[Array, ""]


NONFINITE_BACKTRACKS = 40  # halvings tried when an inner step ends at NaN/Inf


def default_optimizer() -> optax.GradientTransformationExtraArgs:
    """L-BFGS (memory 10) with optax's zoom line search (strong Wolfe)."""
    return optax.lbfgs()


def _caches_value(optimizer: optax.GradientTransformation, z0: Array) -> bool:
    """Whether the optimiser's state stores the value and gradient it last computed."""
    state = jax.eval_shape(optimizer.init, z0)
    try:
        return (
            optax.tree.get(state, "value", default=None) is not None
            and optax.tree.get(state, "grad", default=None) is not None
        )
    except (KeyError, ValueError):
        return False


def _finite(value: Array, grad: Array, z: Array) -> Array:
    return jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)) & jnp.all(jnp.isfinite(z))


def _backtrack_to_finite(fn, z, value, updates, max_backtracks, enabled, any_value=False):
    """The first z + 2^-j u (j = 1, ..., max_backtracks) other than z with finite value and
    gradient and fn <= value (any finite value where `any_value`); returns
    (found, z_j, fn(z_j), ∇fn(z_j), evaluations)."""
    value_and_grad = jax.value_and_grad(fn)

    def cond(carry):
        j, found, *_ = carry
        return enabled & ~found & (j < max_backtracks)

    def body(carry):
        j, _, z_b, v_b, g_b = carry
        z_try = z + jnp.asarray(0.5, z.dtype) ** (j + 1) * updates
        v_try, g_try = value_and_grad(z_try)
        ok = _finite(v_try, g_try, z_try) & ((v_try <= value) | any_value) & jnp.any(z_try != z)
        keep = lambda new, old: jnp.where(ok, new, old)
        return j + 1, ok, keep(z_try, z_b), keep(v_try, v_b), keep(g_try, g_b)

    init = (jnp.asarray(0, jnp.int32), jnp.asarray(False), z, value, jnp.zeros_like(z))
    j, found, z_b, v_b, g_b = jax.lax.while_loop(cond, body, init)
    return found, z_b, v_b, g_b, j


def minimise(
    fn: Callable[[Array], Array],
    z0: Float[Array, " n"],
    optimizer: optax.GradientTransformation,
    max_steps: int | Int[Array, ""],
    tol: Float[Array, ""],
    max_backtracks: int = 0,
    value_floor: float = -float("inf"),
) -> InnerResult:
    """Approximately minimise `fn` from z0 (see the module docstring)."""
    optimizer = optax.with_extra_args_support(optimizer)
    cached = _caches_value(optimizer, z0)
    value_and_grad = optax.value_and_grad_from_state(fn) if cached else None

    def evaluate(z, opt_state):
        if cached:
            return value_and_grad(z, state=opt_state)
        return jax.value_and_grad(fn)(z)

    def linesearch_evaluations(opt_state) -> Array:
        try:
            steps = optax.tree.get(opt_state, "num_linesearch_steps", default=None)
        except (KeyError, ValueError):
            steps = None
        return jnp.asarray(0 if steps is None else steps, jnp.int32)

    opt_state = optimizer.init(z0)
    value, grad = jax.value_and_grad(fn)(z0)

    def small(grad):
        return inf_norm(grad) <= tol

    def cond(carry):
        k, z, _, value, grad, moved, _, bad = carry
        return (k < max_steps) & ~small(grad) & moved & ~bad & ~(value < value_floor)

    def body(carry):
        k, z, opt_state, value, grad, _, evals, _ = carry
        updates, new_state = optimizer.update(grad, opt_state, z, value=value, grad=grad, value_fn=fn)
        z_new = optax.apply_updates(z, updates)
        value_new, grad_new = evaluate(z_new, new_state)
        nonfinite = ~_finite(value_new, grad_new, z_new)
        tries = jnp.asarray(0, jnp.int32)
        if max_backtracks > 0:
            # A non-finite end point: backtrack along the update, restart the optimiser there.
            # No step at all from a non-stationary point (the optimiser's own line search
            # gave up, e.g. on NaN at every trial): probe along -∇ (length max(1, ||z||_∞))
            # for any finite point; none there either means no finite way on.
            stuck = ~nonfinite & jnp.all(z_new == z) & ~small(grad)
            probe = -grad * jnp.maximum(1.0, inf_norm(z)) / jnp.maximum(inf_norm(grad), jnp.finfo(z.dtype).tiny)
            direction = jnp.where(stuck, probe, jnp.where(jnp.isfinite(updates), updates, 0.0))
            found, z_b, v_b, g_b, tries = _backtrack_to_finite(
                fn, z, value, direction, max_backtracks, nonfinite | stuck, any_value=stuck
            )
            rescued = nonfinite & found
            pick = lambda a, b: jnp.where(rescued, a, b)
            z_new, value_new, grad_new = pick(z_b, z_new), pick(v_b, value_new), pick(g_b, grad_new)
            new_state = jax.tree_util.tree_map(pick, optimizer.init(z_b), new_state)
            nonfinite = (nonfinite | stuck) & ~found
        bad = nonfinite
        moved = jnp.any(z_new != z)
        keep = lambda new, old: jnp.where(bad, old, new)
        evals = evals + 1 + linesearch_evaluations(new_state) + tries
        return (
            k + 1,
            keep(z_new, z),
            jax.tree_util.tree_map(keep, new_state, opt_state),
            keep(value_new, value),
            keep(grad_new, grad),
            moved,
            evals,
            bad,
        )

    one = jnp.asarray(1, jnp.int32)
    carry = (jnp.asarray(0, jnp.int32), z0, opt_state, value, grad, jnp.asarray(True), one, jnp.asarray(False))
    k, z, _, value, grad, _, evals, bad = jax.lax.while_loop(cond, body, carry)
    return InnerResult(z=z, value=value, grad=grad, iterations=k, evaluations=evals, nonfinite=bad)
