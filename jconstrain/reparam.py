"""Reparameterisations: constraints absorbed into the model.

A `Reparam` maps unconstrained raw parameters onto a set, so that every raw value is
feasible and any unconstrained optimiser (optax, jc.solve without constraints) can
train it:

    W = reparam.orthogonal()(raw)          # raw: any (n, n) array; W^T W = I
    raw0 = reparam.orthogonal().inverse(W0)  # raw parameters for a feasible W0

Each factory returns a small `equinox.Module` with `__call__(raw) -> value` and
`inverse(value) -> raw` (a right inverse: `r(r.inverse(v)) == v` for `v` in the
image). In a model, either keep the raw array as a field and call the reparam in
`__call__`, or hold a `Constrained(reparam, raw)` and read its `.value` (or call
`unwrap(model)` once to replace every `Constrained` in a pytree by its value).

Limits (by design of the maps, not of the implementation):

- `box` (sigmoid) and `simplex` (softmax) never reach the boundary in exact
  arithmetic; points near it need huge raw values (vanishing gradients). `inverse`
  clips boundary values to finite raw values a machine epsilon inside.
- `positive` (softplus) never reaches 0.
- `orthogonal` reaches only SO(n) (det = +1). "expm" reaches all of SO(n);
  "cayley" misses the orthogonal matrices with eigenvalue -1 (e.g. rotations by pi).
  `inverse` needs a Q in SO(n) without eigenvalue -1 (it returns non-finite values
  otherwise).
- `simplex` is overparameterised by one degree of freedom per row (softmax is
  shift-invariant); `inverse` returns the centred representative.
- Array-valued fields of a reparam (e.g. box bounds) are pytree leaves; the forward
  maps stop their gradients, but exclude them from weight decay / filtering yourself
  (or pass Python floats).
"""

from __future__ import annotations

import abc
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import expm
from jaxtyping import Array, ArrayLike, Float, PyTree

from jconstrain import projections

__all__ = [
    "Reparam",
    "box",
    "positive",
    "simplex",
    "sphere",
    "orthogonal",
    "Constrained",
    "unwrap",
]


def _fixed(value: Any) -> Any:
    """A hyperparameter of the map: no gradient flows into it."""
    return jax.lax.stop_gradient(value)


def _float(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(float)


def _concrete(value: Any) -> np.ndarray | None:
    if isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value)


class Reparam(eqx.Module):
    """A map from unconstrained raw parameters onto a constraint set."""

    @abc.abstractmethod
    def __call__(self, raw: Array) -> Array:
        """The feasible value for `raw`."""

    @abc.abstractmethod
    def inverse(self, value: Array) -> Array:
        """Raw parameters whose image is `value` (for initialisation)."""


class _Box(Reparam):
    lower: Any
    upper: Any

    def __call__(self, raw: Array) -> Array:
        raw = _float(raw)
        lo, hi = _fixed(self.lower), _fixed(self.upper)
        return (lo + (hi - lo) * jax.nn.sigmoid(raw)).astype(raw.dtype)

    def inverse(self, value: Array) -> Array:
        value = _float(value)
        lo, hi = _fixed(self.lower), _fixed(self.upper)
        eps = jnp.finfo(value.dtype).eps
        t = jnp.clip((value - lo) / (hi - lo), eps, 1 - eps)
        return (jnp.log(t) - jnp.log1p(-t)).astype(value.dtype)


def box(lower: ArrayLike, upper: ArrayLike) -> Reparam:
    """Onto the open box lower < x < upper (finite bounds):

        x = lower + (upper - lower) * sigmoid(raw),   raw = logit((x - lower) / (upper - lower)).

    Elementwise; bounds broadcast against raw. For a half-line use `positive`
    (shifted). `inverse` maps boundary values a machine epsilon inside.
    """
    lo, hi = _concrete(lower), _concrete(upper)
    if lo is not None and hi is not None:
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("reparam.box: `lower` and `upper` must be finite.")
        if np.any(lo >= hi):
            raise ValueError("reparam.box: `lower` must be < `upper` everywhere.")
    return _Box(lower, upper)


class _Positive(Reparam):
    def __call__(self, raw: Array) -> Array:
        return jax.nn.softplus(_float(raw))

    def inverse(self, value: Array) -> Array:
        value = _float(value)
        y = jnp.maximum(value, jnp.finfo(value.dtype).tiny)
        return y + jnp.log(-jnp.expm1(-y))  # log(exp(y) - 1), stable for small/large y


def positive() -> Reparam:
    """Onto the positive numbers x > 0, elementwise:

        x = softplus(raw) = log(1 + exp(raw)),   raw = log(exp(x) - 1).

    `inverse` maps x <= 0 to the raw value of the smallest normal number.
    """
    return _Positive()


class _Simplex(Reparam):
    scale: Any = 1.0

    def __call__(self, raw: Array) -> Array:
        raw = _float(raw)
        return (_fixed(self.scale) * jax.nn.softmax(raw, axis=-1)).astype(raw.dtype)

    def inverse(self, value: Array) -> Array:
        value = _float(value)
        p = jnp.maximum(value / _fixed(self.scale), jnp.finfo(value.dtype).tiny)
        logp = jnp.log(p)
        return logp - jnp.mean(logp, axis=-1, keepdims=True)


def simplex(scale: ArrayLike = 1.0) -> Reparam:
    """Onto the interior of the scaled simplex {x > 0, sum x = scale}, last axis:

        x = scale * softmax(raw),   raw = log(x / scale) - mean(log(x / scale)).

    Every row along the last axis is its own simplex (as in `projections.simplex`).
    `inverse(forward(raw))` equals raw minus its mean along the last axis.
    """
    s = _concrete(scale)
    if s is not None and np.any(s <= 0):
        raise ValueError("reparam.simplex: `scale` must be > 0.")
    return _Simplex(scale)


class _Sphere(Reparam):
    radius: Any = 1.0

    def __call__(self, raw: Array) -> Array:
        return projections.sphere(_fixed(self.radius))(_float(raw))

    def inverse(self, value: Array) -> Array:
        return _float(value)


def sphere(radius: ArrayLike = 1.0) -> Reparam:
    """Onto the sphere {x : ||x||_2 = radius}, the whole array as one vector:

        x = radius * raw / ||raw||_2   (raw = 0 maps to radius * e_1),   raw = x.

    Use `jax.vmap` for one sphere per row. The gradient scales like 1/||raw||; at
    raw = 0 it is taken as 0.
    """
    r = _concrete(radius)
    if r is not None and np.any(r < 0):
        raise ValueError("reparam.sphere: `radius` must be >= 0.")
    return _Sphere(radius)


def _skew(raw: Array) -> Array:
    return 0.5 * (raw - jnp.swapaxes(raw, -1, -2))


def _cayley(A: Array) -> Array:
    """(I + A)^{-1} (I - A): orthogonal for skew A, and its own inverse map."""
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    return jnp.linalg.solve(eye + A, eye - A)


class _Orthogonal(Reparam):
    method: Literal["cayley", "expm"] = eqx.field(static=True, default="cayley")

    def __call__(self, raw: Float[Array, "... n n"]) -> Float[Array, "... n n"]:
        raw = _float(raw)
        if raw.ndim < 2 or raw.shape[-1] != raw.shape[-2]:
            raise ValueError(
                "reparam.orthogonal: `raw` must be a square matrix (or a batch), got "
                f"shape {raw.shape}."
            )
        A = _skew(raw)
        if self.method == "cayley":
            return _cayley(A)
        return expm(A)

    def inverse(self, value: Float[Array, "... n n"]) -> Float[Array, "... n n"]:
        Q = _float(value)
        B = _skew(_cayley(Q))  # Q = cayley(B)
        if self.method == "cayley":
            return B
        # Principal log: -iB is Hermitian with eigenvalues beta, and an eigenvalue
        # e^{i theta} of Q = cayley(B) has theta = -2 arctan(beta); so
        # log Q = -2i U diag(arctan beta) U^H, real and skew.
        cdtype = jnp.result_type(B.dtype, jnp.complex64)
        beta, U = jnp.linalg.eigh(-1j * B.astype(cdtype))
        atan = jnp.arctan(beta).astype(cdtype)
        logQ = -2j * (U * atan[..., None, :]) @ jnp.conj(jnp.swapaxes(U, -1, -2))
        return _skew(jnp.real(logQ).astype(Q.dtype))


def orthogonal(method: Literal["cayley", "expm"] = "cayley") -> Reparam:
    """Onto special orthogonal matrices (Q^T Q = I, det Q = +1), from the skew part
    A = (raw - raw^T) / 2 of a square raw matrix (last two axes; batches allowed):

        "cayley":  Q = (I + A)^{-1} (I - A),   inverse A = (I + Q)^{-1} (I - Q);
        "expm":    Q = exp(A),                 inverse A = log(Q) (principal).

    Only SO(n) is reached; Cayley misses matrices with eigenvalue -1. `inverse`
    returns the skew A (so `inverse(Q)` maps back to the same Q), for Q in SO(n)
    without eigenvalue -1. For n x p orthonormal columns, take `Q[..., :p]`.
    """
    if method not in ("cayley", "expm"):
        raise ValueError(
            f"reparam.orthogonal: `method` must be 'cayley' or 'expm', got {method!r}."
        )
    return _Orthogonal(method)


class Constrained(eqx.Module):
    """A parameter stored as raw values and read through a reparam: `.value` is
    `reparam(raw)`. Only `raw` is meant to be trained.

    Build from a feasible initial value with `Constrained.from_value(reparam, v)`.
    """

    reparam: Reparam
    raw: Array

    @property
    def value(self) -> Array:
        return self.reparam(self.raw)

    @classmethod
    def from_value(cls, reparam: Reparam, value: ArrayLike) -> "Constrained":
        return cls(reparam, reparam.inverse(jnp.asarray(value)))


def unwrap(tree: PyTree) -> PyTree:
    """Replace every `Constrained` node of a pytree (e.g. a model) by its `.value`."""
    is_constrained = lambda node: isinstance(node, Constrained)  # noqa: E731
    return jax.tree.map(
        lambda node: node.value if is_constrained(node) else node,
        tree,
        is_leaf=is_constrained,
    )
