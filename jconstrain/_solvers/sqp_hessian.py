"""jc.SQP's inverse Hessian H ≈ (∇²L)⁻¹ behind one interface: a dense n x n matrix
(`memory=None`) or limited-memory BFGS pairs (`memory=m`, O(m n), for large n).

The update is BFGS on s = x+ - x and y = ∇L+ - ∇L. The dense form is damped twice
(`jconstrain._bfgs.inverse_update`): Powell's direct rule sᵀy >= η sᵀH⁻¹s (η =
`curvature_damping`) keeps H from growing by more than 1/η along s where f and c are
(nearly) linear along s, and the inverse rule (`bfgs_damping`) guards sᵀy > 0. The
limited-memory form applies the inverse rule only (`jconstrain._lbfgs.update`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from jconstrain import _lbfgs as lbfgs
from jconstrain._bfgs import inverse_update

InverseHessian = Float[Array, "n n"] | lbfgs.LBFGSMemory


def identity(n: int, dtype, memory: int | None) -> InverseHessian:
    """H = I: the dense identity, or an empty limited memory of `memory` pairs."""
    if memory is None:
        return jnp.eye(n, dtype=dtype)
    return lbfgs.init(n, memory, dtype)


def apply(H: InverseHessian, v: Array) -> Array:
    """H v (v a vector or an n x k matrix)."""
    return lbfgs.apply(H, v) if isinstance(H, lbfgs.LBFGSMemory) else H @ v


def update(
    H: InverseHessian,
    s: Array,
    y: Array,
    first: Bool[Array, ""],
    damping: Float[Array, ""],
    curvature_damping: Float[Array, ""],
) -> InverseHessian:
    """The (damped) BFGS update of H with the pair (s, y); `first` rescales H = I by
    sᵀy/yᵀy before the first dense update."""
    if isinstance(H, lbfgs.LBFGSMemory):
        return lbfgs.update(H, s, y, damping)[0]
    return inverse_update(H, s, y, damping, first, curvature_damping)[0]
