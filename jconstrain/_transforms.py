"""Optax gradient transformations that keep parameters feasible.

`projected(inner, projection)` is projected gradient descent with any optax optimiser
as the step rule: the parameters after `optax.apply_updates` are

    params+ = P(params + u),   u = the updates of `inner`.

A caveat worth knowing: with an adaptive, per-coordinate optimiser (Adam, RMSProp,
Adagrad) the update u is a rescaled gradient, and the fixed points of
x = P(x + u(x)) are not the constrained stationary points unless the rescaling maps
normal cones into themselves (true for boxes and the nonnegative orthant, false for
the simplex, balls, the sphere, Stiefel). E.g. projected Adam on a simplex stalls
wherever the gradient has one sign on the support. `mapping_step=eta` fixes this by
feeding `inner` the gradient mapping G = (x - P(x - eta * g)) / eta, which vanishes
exactly at the constrained stationary points.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jaxtyping import PyTree

__all__ = ["projected"]


def _as_tree_projection(projection: Any) -> Callable[[PyTree], PyTree]:
    """A function params -> params from a function or a pytree of functions."""
    if callable(projection):
        return projection

    def is_leaf(node: Any) -> bool:
        return node is None or callable(node)

    leaves = jax.tree.leaves(projection, is_leaf=is_leaf)
    if not leaves or not all(leaf is None or callable(leaf) for leaf in leaves):
        raise TypeError(
            "projected: `projection` must be a function params -> params, or a pytree "
            f"of such functions (None for no constraint), got {projection!r}."
        )

    def project(params: PyTree) -> PyTree:
        return jax.tree.map(
            lambda proj, sub: sub if proj is None else proj(sub),
            projection,
            params,
            is_leaf=is_leaf,
        )

    return project


def projected(
    inner: optax.GradientTransformation,
    projection: Callable[[PyTree], PyTree] | PyTree,
    *,
    mapping_step: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Run `inner`, then project: the returned updates are

        P(params + u) - params,   with u the updates of `inner`,

    so that `optax.apply_updates(params, updates)` lands on the set, up to one
    rounding error of the subtraction and re-addition.

    Args:
        inner: any optax transformation (e.g. `optax.adam(1e-3)`, or a chain with a
            learning rate: the updates are added to the params as they are).
        projection: a function params -> params (e.g. `jc.projections.simplex()`,
            which may act on the whole params pytree), or a pytree of such functions
            that is a prefix of the params' structure, None leaving a subtree
            unconstrained, e.g. `{"w": projections.stiefel(), "b": None}`.
        mapping_step: None (default) to give `inner` the incoming updates (the
            gradient g) unchanged. A step eta > 0 to give it instead the gradient
            mapping G = (params - P(params - eta * g)) / eta, which is 0 exactly at
            the stationary points of the constrained problem. Use it with adaptive
            optimisers (Adam & co.) on sets other than boxes: without it they can
            stall at non-stationary points (see the module docstring). With
            `optax.sgd(lr)` and eta = lr both choices give the same iterates. Leave
            it None for optimisers that use the gradient through extra args
            (`optax.lbfgs`'s line search).

    Returns:
        An `optax.GradientTransformationExtraArgs` whose state is `inner`'s. `update`
        requires `params` and forwards extra keyword arguments (e.g. `value`,
        `grad`, `value_fn` of `optax.lbfgs`) to `inner`.

    The initial params need not be feasible: the first update lands on the set.
    Note that `inner`'s internal state (moments, curvature pairs) sees the
    unprojected updates.
    """
    if mapping_step is not None and not isinstance(mapping_step, jax.core.Tracer):
        if not mapping_step > 0:
            raise ValueError(
                f"projected: `mapping_step` must be None or > 0, got {mapping_step}."
            )
    inner = optax.with_extra_args_support(inner)
    project = _as_tree_projection(projection)

    def init_fn(params: PyTree) -> optax.OptState:
        return inner.init(params)

    def update_fn(
        updates: PyTree,
        state: optax.OptState,
        params: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, optax.OptState]:
        if params is None:
            raise ValueError(
                "projected: `params` is required in update(updates, state, params); "
                "the projection needs the current parameters."
            )
        if mapping_step is not None:
            probe = project(
                jax.tree.map(lambda p, g: p - mapping_step * g, params, updates)
            )
            updates = jax.tree.map(
                lambda p, q, g: ((p - q) / mapping_step).astype(jnp.result_type(g)),
                params,
                probe,
                updates,
            )
        updates, state = inner.update(updates, state, params, **extra_args)
        new_params = project(optax.apply_updates(params, updates))
        updates = jax.tree.map(
            lambda new, p: (jnp.asarray(new) - p).astype(jnp.result_type(p)),
            new_params,
            params,
        )
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
