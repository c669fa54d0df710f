"""Euclidean projections onto simple sets.

Every public name is a factory: it takes the set's parameters and returns a pure
function `x -> P(x)` with

    P(x) = argmin_{y in C} ||y - x||_2,

which jits, and vmaps over a leading batch axis (`jax.vmap(simplex())(X)` projects
every row of X). Use them with `jconstrain.projected` to keep an optax optimiser's
parameters feasible, or with `jc.ProjectedGradient`.

How a set sees its input:

- Elementwise sets (`box`, `nonnegative`, `linf_ball`) act leafwise on any pytree.
- Vector sets (`l2_ball`, `l1_ball`, `sphere`, `halfspace`, `affine`) treat the
  whole input (an array of any shape, or a pytree: the concatenation of its leaves)
  as one vector. Use `jax.vmap` for one constraint per row.
- `simplex` acts on the last axis of an array (every row of a matrix is projected
  onto its own simplex); `stiefel` and `psd` act on the last two axes (batches of
  matrices).

The output keeps the input's dtype. Projections are continuous (except `sphere` at 0
and `stiefel` at rank-deficient matrices, where the nearest point is not unique) and
their derivatives are finite everywhere, so `jax.grad` through them is safe (e.g.
`l2_ball` at 0, `stiefel` at an orthonormal matrix, `psd` at repeated eigenvalues).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PyTree

__all__ = [
    "box",
    "nonnegative",
    "simplex",
    "l1_ball",
    "l2_ball",
    "linf_ball",
    "affine",
    "halfspace",
    "sphere",
    "stiefel",
    "psd",
]

Projection = Callable[[Any], Any]


# ---------------------------------------------------------------------------- helpers


def _concrete(value: Any) -> np.ndarray | None:
    """`value` as a NumPy array when it is concrete, None when traced."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value)):
        return None
    try:
        return np.asarray(value)
    except Exception:  # not array-like (e.g. a pytree): no value check possible
        return None


def _check_nonnegative(value: Any, name: str, fn: str) -> None:
    v = _concrete(value)
    if v is not None and v.dtype != object:
        if np.any(np.isnan(v)) or np.any(v < 0):
            raise ValueError(f"projections.{fn}: `{name}` must be >= 0, got {value}.")


def _check_box(lower: Any, upper: Any) -> None:
    """Raise if concrete bounds have lower > upper somewhere."""
    lo_leaf, hi_leaf = _is_leaf_param(lower), _is_leaf_param(upper)
    if lo_leaf and hi_leaf:
        pairs = [(lower, upper)]
    elif lo_leaf:
        pairs = [(lower, hi) for hi in jax.tree.leaves(upper)]
    elif hi_leaf:
        pairs = [(lo, upper) for lo in jax.tree.leaves(lower)]
    else:
        pairs = list(zip(jax.tree.leaves(lower), jax.tree.leaves(upper)))
    for lo, hi in pairs:
        if lo is None or hi is None:
            continue
        lo_c, hi_c = _concrete(lo), _concrete(hi)
        if lo_c is None or hi_c is None:
            continue
        try:
            bad = bool(np.any(lo_c > hi_c))
        except ValueError:  # shapes that only broadcast against x: not checked here
            bad = False
        if bad:
            raise ValueError("projections.box: `lower` must be <= `upper` everywhere.")


def _is_leaf_param(param: Any) -> bool:
    """Whether `param` is one value (scalar/array) rather than a pytree of values."""
    return jax.tree_util.treedef_is_leaf(jax.tree.structure(param))


def _leafwise(fn: Callable, x: PyTree, *params: Any) -> PyTree:
    """Apply `fn(leaf, *params)` to every leaf of x; each param is one value applied
    to every leaf, or a pytree with x's structure."""
    tree_idx = [i for i, p in enumerate(params) if not _is_leaf_param(p)]

    def one(xi: Array, *tree_values: Any) -> Array:
        values = list(params)
        for i, v in zip(tree_idx, tree_values):
            values[i] = v
        return fn(xi, *values)

    return jax.tree.map(one, x, *[params[i] for i in tree_idx])


def _norm(x: PyTree) -> Array:
    """||x||_2 over all leaves, as m ||x / m||_2 with m = max|x_i| (held constant for
    derivatives): no overflow for |x| near the dtype's largest value (1e200 in float64)
    nor underflow for tiny x; 0 at x = 0, with a finite derivative there."""
    leaves = jax.tree.leaves(x)
    if not leaves:
        return jnp.zeros(())
    m = jax.lax.stop_gradient(
        functools.reduce(jnp.maximum, [jnp.max(jnp.abs(leaf), initial=0.0) for leaf in leaves])
    )
    m_safe = jnp.where(m > 0, m, 1.0)
    return m_safe * _safe_sqrt(sum(jnp.sum(jnp.square(leaf / m_safe)) for leaf in leaves))


def _safe_sqrt(sq: Array) -> Array:
    """sqrt with a finite (zero) derivative at 0 (double-where trick)."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _scale_leaves(x: PyTree, factor: Array) -> PyTree:
    return jax.tree.map(lambda xi: (factor * xi).astype(jnp.result_type(xi)), x)


def _as_array(x: Any, fn: str) -> Array:
    """x as one array, or a clear TypeError (array-only sets)."""
    if not isinstance(x, (jax.Array, np.ndarray, np.generic, float, int)):
        raise TypeError(
            f"projections.{fn}: `x` must be an array, got {type(x).__name__}; for a "
            "pytree, map the projection over its leaves (or give `projected` a pytree "
            "of projections)."
        )
    return jnp.asarray(x)


def _mT(a: Array) -> Array:
    return jnp.swapaxes(a, -1, -2)


# ------------------------------------------------------------------- elementwise sets


def box(lower: ArrayLike | PyTree, upper: ArrayLike | PyTree) -> Projection:
    """Projection onto the box {x : lower <= x <= upper}: P(x) = clip(x, lower, upper).

    `lower` and `upper` are scalars or arrays broadcasting against every leaf of x, or
    pytrees with x's structure; ±inf (or None for a whole side) leaves a side
    unbounded. Acts leafwise.
    """
    _check_box(lower, upper)

    def project(x: PyTree) -> PyTree:
        return _leafwise(
            lambda xi, l, u: jnp.clip(xi, l, u).astype(jnp.result_type(xi)),
            x,
            lower,
            upper,
        )

    return project


def nonnegative() -> Projection:
    """Projection onto the nonnegative orthant {x : x >= 0}: P(x) = max(x, 0).

    Acts leafwise on any pytree.
    """

    def project(x: PyTree) -> PyTree:
        return jax.tree.map(
            lambda xi: jnp.maximum(xi, 0).astype(jnp.result_type(xi)), x
        )

    return project


def linf_ball(radius: ArrayLike = 1.0) -> Projection:
    """Projection onto the l-infinity ball {x : max_i |x_i| <= radius}:
    P(x) = clip(x, -radius, radius).

    The ball of the whole (flattened) input is the product of per-leaf balls, so it
    acts leafwise on any pytree.
    """
    _check_nonnegative(radius, "radius", "linf_ball")

    def project(x: PyTree) -> PyTree:
        return jax.tree.map(
            lambda xi: jnp.clip(xi, -radius, radius).astype(jnp.result_type(xi)), x
        )

    return project


# ------------------------------------------------------------------------ vector sets


def _project_simplex_last_axis(x: Array, scale: Array) -> Array:
    """Sort-based projection onto {y >= 0, sum y = scale} along the last axis.

    Held, Wolfe & Crowder (1974); Duchi et al. (2008): with u = x sorted in
    decreasing order and rho the largest k such that u_k > (sum_{i<=k} u_i - scale)/k,
    theta = (sum_{i<=rho} u_i - scale)/rho and P(x) = max(x - theta, 0).

    P(x) = P(x - c) for a constant c, so x is first shifted by its maximum (held
    constant for derivatives): then u_1 = 0 and the sums no longer lose `scale` to
    rounding when max|x| / scale reaches 1/eps (P([1e16, 0]) = [1, 0], not [0, 0]).
    """
    n = x.shape[-1]
    x = x - jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    u = -jnp.sort(-x, axis=-1)
    css = jnp.cumsum(u, axis=-1) - scale[..., None]
    k = jnp.arange(1, n + 1, dtype=x.dtype)
    active = u * k > css  # True on a prefix (k = 1 always, for scale > 0)
    rho = jnp.max(jnp.where(active, jnp.arange(1, n + 1), 1), axis=-1)
    css_rho = jnp.take_along_axis(css, (rho - 1)[..., None], axis=-1)[..., 0]
    theta = css_rho / rho.astype(x.dtype)
    return jnp.maximum(x - theta[..., None], 0.0)


def simplex(scale: ArrayLike = 1.0) -> Projection:
    """Projection onto the scaled probability simplex along the last axis:

        {y : y_i >= 0, sum_i y_i = scale},   P(x) = max(x - theta, 0),

    with the threshold theta found by sorting (O(n log n); ties are harmless).
    For an array of shape (..., n) every row along the last axis is projected onto
    its own simplex; ravel first for one simplex over all entries. `scale >= 0`
    (scale = 0 is the set {0}); a scalar or an array broadcasting to x.shape[:-1].
    """
    _check_nonnegative(scale, "scale", "simplex")

    def project(x: Array) -> Array:
        x = _as_array(x, "simplex")
        if x.ndim == 0:
            raise ValueError("projections.simplex: `x` must have at least one axis.")
        s = jnp.broadcast_to(jnp.asarray(scale, x.dtype), x.shape[:-1])
        return _project_simplex_last_axis(x, s).astype(x.dtype)

    return project


def l1_ball(radius: ArrayLike = 1.0) -> Projection:
    """Projection onto the l1 ball {x : sum_i |x_i| <= radius}:

        P(x) = x                                   if ||x||_1 <= radius,
        P(x) = sign(x) * P_simplex(radius)(|x|)     otherwise,

    sort-based via `simplex`. Acts on the whole input as one vector (all leaves of a
    pytree together).
    """
    _check_nonnegative(radius, "radius", "l1_ball")

    def project(x: PyTree) -> PyTree:
        flat, unravel = ravel_pytree(x)
        if flat.size == 0:
            return x
        r = jnp.asarray(radius, flat.dtype)
        inside = jnp.sum(jnp.abs(flat)) <= r
        onto = jnp.sign(flat) * _project_simplex_last_axis(jnp.abs(flat), r)
        return unravel(jnp.where(inside, flat, onto).astype(flat.dtype))

    return project


def l2_ball(radius: ArrayLike = 1.0) -> Projection:
    """Projection onto the l2 ball {x : ||x||_2 <= radius}:

        P(x) = x * min(1, radius / ||x||_2)     (P(0) = 0).

    Acts on the whole input as one vector (all leaves of a pytree together). Its
    derivative is finite everywhere, including at x = 0 and for radius = 0.
    """
    _check_nonnegative(radius, "radius", "l2_ball")

    def project(x: PyTree) -> PyTree:
        norm = _norm(x)
        outside = norm > radius
        factor = jnp.where(outside, radius / jnp.where(outside, norm, 1.0), 1.0)
        return _scale_leaves(x, factor)

    return project


def sphere(radius: ArrayLike = 1.0) -> Projection:
    """Projection onto the sphere {x : ||x||_2 = radius}:

        P(x) = radius * x / ||x||_2,   and   P(0) = radius * e_1,

    where e_1 is the first entry of the (flattened) input — for a pytree, the first
    entry of its first leaf. (Every point of the sphere is nearest to 0; we pick e_1.)
    Not convex. Acts on the whole input as one vector. The derivative at 0 is taken
    as 0 (finite), elsewhere it is the exact one.
    """
    _check_nonnegative(radius, "radius", "sphere")

    def project(x: PyTree) -> PyTree:
        leaves = jax.tree.leaves(x)
        if not leaves or all(leaf.size == 0 for leaf in leaves):
            raise ValueError("projections.sphere: `x` must have at least one entry.")
        norm = _norm(x)
        nonzero = norm > 0
        factor = jnp.where(nonzero, radius / jnp.where(nonzero, norm, 1.0), 0.0)
        scaled = _scale_leaves(x, factor)
        first = next(i for i, leaf in enumerate(leaves) if leaf.size > 0)
        treedef = jax.tree.structure(x)
        out = jax.tree.leaves(scaled)
        e1 = jnp.zeros(leaves[first].size, leaves[first].dtype).at[0].set(1.0)
        e1 = (radius * e1).reshape(leaves[first].shape).astype(leaves[first].dtype)
        out[first] = jnp.where(nonzero, out[first], e1)
        return jax.tree.unflatten(treedef, out)

    return project


def halfspace(a: ArrayLike | PyTree, b: ArrayLike) -> Projection:
    """Projection onto the halfspace {x : <a, x> <= b}, a != 0:

        P(x) = x - max(0, <a, x> - b) / ||a||^2 * a.

    `a` has x's size (an array, or a pytree with x's structure); x is treated as one
    flattened vector.
    """
    a_flat, _ = ravel_pytree(a)
    a_c = _concrete(a_flat)
    if a_c is not None and not np.any(a_c):
        raise ValueError("projections.halfspace: `a` must be nonzero.")
    a_sq = jnp.sum(jnp.square(a_flat))
    safe_a_sq = jnp.where(a_sq > 0, a_sq, 1.0)

    def project(x: PyTree) -> PyTree:
        flat, unravel = ravel_pytree(x)
        if flat.shape != a_flat.shape:
            raise ValueError(
                f"projections.halfspace: `x` has {flat.size} entries but `a` has "
                f"{a_flat.size}."
            )
        excess = jnp.maximum(jnp.dot(a_flat, flat) - b, 0.0)
        return unravel((flat - (excess / safe_a_sq) * a_flat).astype(flat.dtype))

    return project


def affine(A: Float[ArrayLike, "m n"], b: Float[ArrayLike, " m"]) -> Projection:
    """Projection onto the affine set {x : A x = b}, least-squares treatment:

        P(x) = x - A^+ (A x - b) = x - V_r V_r^T x + A^+ b,

    with A^+ the pseudo-inverse from a thin SVD A = U S V^T computed once, here
    (singular values below max(m, n) * eps * s_max count as zero, as in
    `numpy.linalg.pinv`). For A of full row rank this is the usual
    x - A^T (A A^T)^{-1} (A x - b). For rank-deficient A it still projects onto
    {x : A x = b} when b is consistent, and otherwise onto the set of least-squares
    solutions {x : A^T A x = A^T b}. x (of size n, any shape or a pytree) is treated
    as one flattened vector.
    """
    A = jnp.asarray(A)
    b = jnp.asarray(b)
    if A.ndim != 2:
        raise ValueError(f"projections.affine: `A` must be a matrix, got shape {A.shape}.")
    if b.shape != (A.shape[0],):
        raise ValueError(
            f"projections.affine: `b` must have shape ({A.shape[0]},), got {b.shape}."
        )
    dtype = jnp.result_type(A, b, jnp.float32)
    A, b = A.astype(dtype), b.astype(dtype)
    m, n = A.shape
    U, s, Vt = jnp.linalg.svd(A, full_matrices=False)
    tol = max(m, n) * jnp.finfo(dtype).eps * (jnp.max(s) if s.size else 0.0)
    keep = s > tol
    s_inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    V_r = Vt.T * keep  # (n, k), columns outside the row space zeroed
    x_ls = Vt.T @ (s_inv * (U.T @ b))  # A^+ b: the min-norm least-squares solution

    def project(x: PyTree) -> PyTree:
        flat, unravel = ravel_pytree(x)
        if flat.shape != (n,):
            raise ValueError(
                f"projections.affine: `x` has {flat.size} entries but `A` has {n} "
                "columns."
            )
        out = flat - V_r @ (V_r.T @ flat) + x_ls
        return unravel(out.astype(flat.dtype))

    return project


# ------------------------------------------------------------------------ matrix sets


@jax.custom_jvp
def _polar(X: Float[Array, "... n p"]) -> Float[Array, "... n p"]:
    """Orthonormal polar factor U V^T of a tall matrix X = U S V^T (n >= p)."""
    U, _, Vt = jnp.linalg.svd(X, full_matrices=False)
    return U @ Vt


@_polar.defjvp
def _polar_jvp(primals, tangents):
    # With X = U S V^T, Q = U V^T, K = U^T dX V:
    #   dQ = U Omega V^T + (dX V - U K) S^{-1} V^T,  Omega_ij = (K - K^T)_ij / (s_i + s_j),
    # which only divides by s_i + s_j and s_i (finite for full-rank X), unlike the
    # SVD's own derivative (1 / (s_i^2 - s_j^2): NaN at repeated singular values).
    (X,), (dX,) = primals, tangents
    U, s, Vt = jnp.linalg.svd(X, full_matrices=False)
    V = _mT(Vt)
    K = _mT(U) @ dX @ V
    s_sum = s[..., :, None] + s[..., None, :]
    pos = s_sum > 0
    Omega = jnp.where(pos, (K - _mT(K)) / jnp.where(pos, s_sum, 1.0), 0.0)
    s_pos = s > 0
    s_inv = jnp.where(s_pos, 1.0 / jnp.where(s_pos, s, 1.0), 0.0)
    perp = (dX @ V - U @ K) * s_inv[..., None, :]
    dQ = (U @ Omega + perp) @ Vt
    return U @ Vt, dQ


def stiefel() -> Projection:
    """Projection onto the Stiefel manifold {X in R^{n x p} : X^T X = I} (n >= p):

        P(X) = U V^T   where X = U S V^T is a thin SVD (the polar factor of X).

    Acts on the last two axes, so a batch of shape (..., n, p) projects every matrix.
    For wide matrices (n < p) it returns the nearest matrix with orthonormal rows
    (X X^T = I), the same formula. Not convex; for rank-deficient X the nearest point
    is not unique and one of them is returned. The derivative (a custom JVP that
    divides only by s_i + s_j and s_i) is exact wherever X has full rank, including
    at points already on the manifold where the SVD's own derivative is NaN, and
    finite (guarded) elsewhere.
    """

    def project(X: Array) -> Array:
        X = _as_array(X, "stiefel")
        if X.ndim < 2:
            raise ValueError(
                f"projections.stiefel: `X` must be a matrix (or a batch), got shape "
                f"{X.shape}."
            )
        if X.shape[-2] < X.shape[-1]:
            return _mT(_polar(_mT(X)))
        return _polar(X)

    return project


@jax.custom_jvp
def _psd_project(S: Float[Array, "... n n"]) -> Float[Array, "... n n"]:
    w, V = jnp.linalg.eigh(S)
    return (V * jnp.maximum(w, 0.0)[..., None, :]) @ _mT(V)


@_psd_project.defjvp
def _psd_project_jvp(primals, tangents):
    # Daleckii-Krein: for F(S) = V f(w) V^T, dF = V (G * (V^T dS V)) V^T with
    # G_ij = (f(w_i) - f(w_j)) / (w_i - w_j), or f'(w_i) where w_i = w_j.
    (S,), (dS,) = primals, tangents
    w, V = jnp.linalg.eigh(S)
    f = jnp.maximum(w, 0.0)
    fprime = (w > 0).astype(w.dtype)
    diff = w[..., :, None] - w[..., None, :]
    distinct = diff != 0
    G = jnp.where(
        distinct,
        (f[..., :, None] - f[..., None, :]) / jnp.where(distinct, diff, 1.0),
        fprime[..., :, None] * jnp.ones_like(diff),
    )
    dF = V @ (G * (_mT(V) @ dS @ V)) @ _mT(V)
    return (V * f[..., None, :]) @ _mT(V), dF


def psd() -> Projection:
    """Projection onto the cone of symmetric positive semidefinite matrices:

        P(X) = V max(Lambda, 0) V^T,   where (X + X^T)/2 = V Lambda V^T.

    Symmetrising first makes this the Frobenius-nearest PSD matrix to any square X.
    Acts on the last two axes (batches of matrices). The derivative is finite
    everywhere, including at repeated eigenvalues.
    """

    def project(X: Array) -> Array:
        X = _as_array(X, "psd")
        if X.ndim < 2 or X.shape[-1] != X.shape[-2]:
            raise ValueError(
                f"projections.psd: `X` must be a square matrix (or a batch), got "
                f"shape {X.shape}."
            )
        return _psd_project(0.5 * (X + _mT(X))).astype(X.dtype)

    return project
