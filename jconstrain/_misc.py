"""Small helpers every solver uses: a pytree `where`, the ∞-norm, and the status ladder."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jconstrain._solution import Status


def tree_where(pred: Bool[Array, ""], on_true: Any, on_false: Any) -> Any:
    """`jnp.where(pred, a, b)` leaf by leaf over two pytrees of one structure."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def inf_norm(v: Float[Array, "..."]) -> Float[Array, ""]:
    """||v||_∞ = max_i |v_i|, 0 for an empty v."""
    return jnp.max(jnp.abs(v), initial=0.0)


def first_status(*rungs: tuple[Bool[Array, ""], Status]) -> tuple[Bool[Array, ""], Int[Array, ""]]:
    """(done, status) from a ladder of (condition, status) rungs, highest priority first:
    the status of the first rung whose condition holds, and done; MAX_STEPS (not done)
    when none holds."""
    conditions = [condition for condition, _ in rungs]
    status = jnp.select(conditions, [code for _, code in rungs], Status.MAX_STEPS)
    done = jnp.any(jnp.stack([jnp.asarray(c) for c in conditions]))
    return done, status.astype(jnp.int32)
