"""The QP in the canonical form the interior-point method works on, and its checks.

The user's inequalities and finite bounds are stacked into one cone of m_c rows,

    G x + s = h,  s >= 0,   G = [A_ineq; -I; I],   h = [b_ineq; -lower; upper],

and a 0/1 mask switches off the rows of infinite bounds (their slack and multiplier
never enter the method: no barrier term is ever made for them). G is never formed:
`G_mv` and `GT_mv` apply it with its block structure.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float


class QPData(eqx.Module):
    """minimise 1/2 x^T Q x + c^T x  s.t.  A_eq x = b_eq,  G x <= h on the masked rows."""

    Q: Float[Array, "n n"]
    c: Float[Array, " n"]
    A_eq: Float[Array, "m_eq n"]
    b_eq: Float[Array, " m_eq"]
    A_in: Float[Array, "m_in n"]
    b_in: Float[Array, " m_in"]
    lower: Float[Array, " n"]  # 0 where infinite
    upper: Float[Array, " n"]  # 0 where infinite
    has_lower: Bool[Array, " n"]
    has_upper: Bool[Array, " n"]

    @property
    def n(self) -> int:
        return self.c.shape[-1]

    @property
    def mask(self) -> Float[Array, " m_c"]:
        """1 on the cone rows that exist (all inequalities, finite bounds), else 0."""
        ones = jnp.ones(self.b_in.shape, self.c.dtype)
        return jnp.concatenate([ones, self.has_lower.astype(self.c.dtype), self.has_upper.astype(self.c.dtype)])

    @property
    def h(self) -> Float[Array, " m_c"]:
        return jnp.concatenate([self.b_in, -self.lower, self.upper])

    def G_mv(self, x: Float[Array, " n"]) -> Float[Array, " m_c"]:
        """G x = [A_ineq x; -x; x]."""
        return jnp.concatenate([self.A_in @ x, -x, x])

    def GT_mv(self, z: Float[Array, " m_c"]) -> Float[Array, " n"]:
        """G^T z = A_ineq^T z_in - z_lower + z_upper."""
        z_in, z_lo, z_up = self.split(z)
        return self.A_in.T @ z_in - z_lo + z_up

    def split(self, z: Float[Array, " m_c"]) -> tuple[Array, Array, Array]:
        """The inequality, lower-bound and upper-bound parts of a cone vector."""
        m_in, n = self.b_in.shape[-1], self.n
        return z[:m_in], z[m_in : m_in + n], z[m_in + n :]


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _check(name: str, x: Any, shape: tuple[int, ...]) -> None:
    if _shape_of(x) != shape:
        raise ValueError(f"qp.solve: `{name}` must have shape {shape}, got {_shape_of(x)}.")


def _check_dtype(name: str, x: Any) -> None:
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.complexfloating) or not (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_
    ):
        raise TypeError(f"qp.solve: `{name}` must be a real array, got dtype {dtype}.")


def _pair(name_A: str, A: Any, name_b: str, b: Any, n: int) -> int:
    """Check a constraint pair (A, b) and return its number of rows."""
    if (A is None) != (b is None):
        given, missing = (name_A, name_b) if b is None else (name_b, name_A)
        raise ValueError(f"qp.solve: `{given}` was given without `{missing}`; give both or neither.")
    if A is None:
        return 0
    if len(_shape_of(A)) != 2 or _shape_of(A)[1] != n:
        raise ValueError(f"qp.solve: `{name_A}` must have shape (m, {n}), got {_shape_of(A)}.")
    _check(name_b, b, (_shape_of(A)[0],))
    return _shape_of(A)[0]


def canonical(Q, c, A_eq, b_eq, A_ineq, b_ineq, lower, upper) -> tuple[QPData, Array, Array]:
    """Check shapes and build the `QPData`; also return (finite, crossed).

    Shape errors raise ValueError naming the argument (before any tracing). Everything
    is cast to one floating dtype, the promotion of all inputs given (integers promote
    to the default float); Q is replaced by its symmetric part (Q + Q^T) / 2. `finite`
    is False when the data hold NaN, or Inf outside the bounds; `crossed` (n,) marks
    the bounds with lower > upper, lower = +inf or upper = -inf.
    """
    if len(_shape_of(c)) != 1:
        raise ValueError(f"qp.solve: `c` must be a vector of shape (n,), got {_shape_of(c)}.")
    n = _shape_of(c)[0]
    _check("Q", Q, (n, n))
    m_eq = _pair("A_eq", A_eq, "b_eq", b_eq, n)
    m_in = _pair("A_ineq", A_ineq, "b_ineq", b_ineq, n)
    for name, bound in (("lower", lower), ("upper", upper)):
        if bound is not None:
            _check(name, bound, (n,))
    args = dict(Q=Q, c=c, A_eq=A_eq, b_eq=b_eq, A_ineq=A_ineq, b_ineq=b_ineq, lower=lower, upper=upper)
    given = {k: v for k, v in args.items() if v is not None}
    for name, value in given.items():
        _check_dtype(name, value)
    dtype = jnp.result_type(*given.values(), float)
    as_array = lambda x, shape: jnp.zeros(shape, dtype) if x is None else jnp.asarray(x, dtype)
    lower = jnp.full((n,), -jnp.inf, dtype) if lower is None else jnp.asarray(lower, dtype)
    upper = jnp.full((n,), jnp.inf, dtype) if upper is None else jnp.asarray(upper, dtype)
    Q = jnp.asarray(Q, dtype)
    data = QPData(
        Q=0.5 * (Q + Q.T),  # only the symmetric part enters x^T Q x
        c=jnp.asarray(c, dtype),
        A_eq=as_array(A_eq, (m_eq, n)),
        b_eq=as_array(b_eq, (m_eq,)),
        A_in=as_array(A_ineq, (m_in, n)),
        b_in=as_array(b_ineq, (m_in,)),
        lower=jnp.where(jnp.isfinite(lower), lower, 0.0),
        upper=jnp.where(jnp.isfinite(upper), upper, 0.0),
        has_lower=lower > -jnp.inf,
        has_upper=upper < jnp.inf,
    )
    matrices = (data.Q, data.c, data.A_eq, data.b_eq, data.A_in, data.b_in)
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(a)) for a in matrices]))
    finite = finite & ~jnp.any(jnp.isnan(lower)) & ~jnp.any(jnp.isnan(upper))
    crossed = (lower > upper) | (lower == jnp.inf) | (upper == -jnp.inf)
    return data, finite, crossed
