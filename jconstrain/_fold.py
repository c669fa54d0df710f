"""Constraint folding: many constraints as one.

Deep-learning constraints often come by the thousand (one per sample, pixel or
weight). Folding replaces them by a single nonnegative constraint on a norm of their
violations,

    eq:   c(x) = 0   ⟺   ||c(x)||_p = 0,
    ineq: c(x) <= 0  ⟺   ||max(c(x), 0)||_p <= 0,

which keeps the feasible set and shrinks the SQP subproblems from m rows to one. The
folded function is nonsmooth where the violation vanishes (as every exact penalty
is), which the nonsmooth BFGS-SQP handles; multipliers are then reported for the
folded constraint only.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

def _l2(v: jnp.ndarray) -> jnp.ndarray:
    """||v||_2 with gradient 0 (not NaN) at v = 0, the feasible case (double-where)."""
    squares = jnp.sum(v**2)
    positive = squares > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


_NORMS = {
    "l1": lambda v: jnp.sum(v),
    "l2": _l2,
    "linf": lambda v: jnp.max(v, initial=0.0),
}


def fold(
    constraint: Callable[[Any, Any], Any],
    kind: Literal["eq", "ineq"] = "ineq",
    norm: Literal["l1", "l2", "linf"] = "l2",
) -> Callable[[Any, Any], jnp.ndarray]:
    """Fold the constraints `constraint(x, args)` (a pytree of arrays) into one.

    Args:
        constraint: the user's `eq` or `ineq` function.
        kind: "eq" (every element == 0) or "ineq" (every element <= 0).
        norm: "l1", "l2" or "linf" norm of the violations.

    Returns:
        A function `(x, args) -> array of shape (1,)` to pass as `jc.Problem(ineq=...)`:
        it is >= 0 everywhere and == 0 exactly where the original constraints hold.
    """
    if kind not in ("eq", "ineq"):
        raise ValueError(f"kind must be 'eq' or 'ineq', got {kind!r}.")
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}.")
    measure = _NORMS[norm]

    def folded(x: Any, args: Any) -> jnp.ndarray:
        c = ravel_pytree(constraint(x, args))[0]
        violation = jnp.abs(c) if kind == "eq" else jnp.maximum(c, 0)
        return measure(violation)[None]

    return folded
