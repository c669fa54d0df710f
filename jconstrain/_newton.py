"""Newton's method with a shifted Cholesky factorisation, as an optax optimiser.

For small unconstrained subproblems (the inner minimisations of `jc.AugmentedLagrangian`
and `jc.Penalty` on problems with a few dozen variables) the exact Hessian is cheap and
Newton's method needs far fewer iterations than L-BFGS: `optimizer=jc.newton()`.
Under `jax.vmap` over thousands of small problems the iteration count, not the
arithmetic, sets the run time, so this is the inner optimiser for batched sweeps.

One update at z, with g = ∇f(z) and H = ∇²f(z) (`jax.hessian`, symmetrised):

1. Cholesky with an added multiple of the identity (Nocedal & Wright, Algorithm 3.3;
   `shifted_ldl`): L D Lᵀ = H + τ I with L unit lower triangular and D > 0, for the
   first τ in τ_0, max(2τ_0, β), ... that factors; β = 10⁻³ max|H_ij| (1 for H = 0),
   τ_0 = 0 if min H_ii > 0, else β - min H_ii. A positive definite H is factored as it
   is (τ = 0, however ill-conditioned): near a strong minimiser this is Newton's method.
2. Direction p = -(L D Lᵀ)⁻¹ g, a descent direction (gᵀp < 0) whenever g ≠ 0; where it
   is not finite (NaN/Inf in H), p = -g. A direction longer than
   `max_step` · max(1, ||z||_∞) (in the ∞-norm) is scaled back to that length: where H
   is nearly singular along g, the full step would leave every scale of the problem
   (and the domain of functions such as log).
3. Armijo backtracking from t = 1: accept the first t with
       f(z + t p) <= f(z) + c1 t gᵀp,
   otherwise t is halved, or cut to t / 10 where the quadratic that interpolates f(z),
   gᵀp and f(z + t p) has its minimiser below t / 10 (a step many times too long);
   NaN/Inf values halve t. After `max_backtracks` failed trials the update is zero and
   the inner loop stops there.
   Where rounding hides the decrease (the predicted -gᵀp below 10 eps |f(z)|, typical
   of a penalty term ρ c² with large ρ near its minimiser) the full step is also
   accepted if f(z + p) <= f(z) + 10 eps |f(z)| and ||∇f(z + p)||_∞ < ||∇f(z)||_∞:
   progress the values cannot show is measured by the gradient.

The state caches f and ∇f at the accepted point (optax's `value`/`grad` convention,
as `optax.lbfgs`), so callers that use `optax.value_and_grad_from_state` evaluate once.
The Hessian is n x n: `max_dim` (default 1000) guards against forming it for a network's
parameters, where `optax.lbfgs()` is the inner optimiser to use.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from jconstrain._checks import check_count, check_range
from jconstrain._misc import inf_norm


class NewtonState(eqx.Module):
    """f and ∇f at the current point (inf/0 before the first update) and the number of
    function evaluations of the last line search."""

    value: Float[Array, ""]
    grad: Any
    num_linesearch_steps: Int[Array, ""]


def ldl(A: Float[Array, "n n"]) -> tuple[Float[Array, "n n"], Float[Array, " n"]]:
    """(L, d) with L diag(d) Lᵀ = A for symmetric A, without pivoting: column j takes
    d_j = A_jj - Σ_{s<j} d_s L_js² and L_ij = (A_ij - Σ_{s<j} d_s L_is L_js) / d_j.
    A is positive definite iff every d_j > 0 (otherwise the factors are meaningless).

    Columns are computed in a `lax.fori_loop` (no unrolling in n); under vmap every
    operation is batched elementwise, so thousands of small factorisations run as one.
    """
    n = A.shape[0]
    index = jnp.arange(n)

    def column(j, carry):
        L, d = carry
        # d is zero from column j on, so L @ (d * L[j]) sums over s < j only.
        c = A[:, j] - L @ (d * L[j])
        L = L.at[:, j].set(jnp.where(index > j, c / c[j], L[:, j]))
        return L, d.at[j].set(c[j])

    return jax.lax.fori_loop(0, n, column, (jnp.eye(n, dtype=A.dtype), jnp.zeros(n, A.dtype)))


def shifted_ldl(
    H: Float[Array, "n n"], max_tries: int = 64
) -> tuple[Float[Array, "n n"], Float[Array, " n"], Float[Array, ""]]:
    """(L, d, τ) with L diag(d) Lᵀ = H + τ I and d > 0, τ from the sequence of the
    module docstring (at most `max_tries` factorisations; d may hold non-positive
    entries if none succeeded, which only a non-finite H causes in practice)."""
    n = H.shape[0]
    dtype = H.dtype
    size = jnp.max(jnp.abs(H), initial=0.0)
    beta = jnp.where(size > 0, 1e-3 * size, 1.0)
    min_diag = jnp.min(jnp.diag(H), initial=jnp.inf)
    eye = jnp.eye(n, dtype=dtype)

    def factor(tau):
        L, d = ldl(H + tau * eye)
        return L, d, jnp.all(d > 0)

    def cond(carry):
        k, _, _, _, ok = carry
        return ~ok & (k < max_tries)

    def body(carry):
        k, tau, _, _, _ = carry
        tau = jnp.maximum(2.0 * tau, beta)
        return (k + 1, tau, *factor(tau))

    tau0 = jnp.where(min_diag > 0, 0.0, beta - min_diag).astype(dtype)
    _, tau, L, d, _ = jax.lax.while_loop(cond, body, (jnp.asarray(1, jnp.int32), tau0, *factor(tau0)))
    return L, d, tau


def ldl_solve(L: Float[Array, "n n"], d: Float[Array, " n"], b: Float[Array, " n"]) -> Float[Array, " n"]:
    """x with L diag(d) Lᵀ x = b, by forward and back substitution."""
    n = b.shape[0]

    def forward(j, y):  # y is zero from j on, and L[j, j] = 1 multiplies y[j] = 0
        return y.at[j].set(b[j] - L[j] @ y)

    y = jax.lax.fori_loop(0, n, forward, jnp.zeros_like(b)) / d

    def backward(k, x):
        j = n - 1 - k
        return x.at[j].set(y[j] - L[:, j] @ x)

    return jax.lax.fori_loop(0, n, backward, jnp.zeros_like(b))


def newton_direction(H: Float[Array, "n n"], g: Float[Array, " n"]) -> Float[Array, " n"]:
    """p = -(H + τ I)⁻¹ g with `shifted_ldl`; -g where that is not finite."""
    L, d, _ = shifted_ldl(0.5 * (H + H.T))
    p = -ldl_solve(L, d, g)
    return jnp.where(jnp.all(jnp.isfinite(p)) & jnp.all(d > 0), p, -g)


def _capped(p: Float[Array, " n"], z: Float[Array, " n"], max_step: float) -> Float[Array, " n"]:
    """p scaled back to ||p||_∞ <= max_step · max(1, ||z||_∞) where it is longer."""
    longest = max_step * jnp.maximum(1.0, inf_norm(z))
    return p * jnp.minimum(1.0, longest / jnp.maximum(inf_norm(p), jnp.finfo(p.dtype).tiny))


def _armijo(
    value_and_grad: Callable[[Array], tuple[Array, Array]],
    z: Float[Array, " n"],
    value: Float[Array, ""],
    slope: Float[Array, ""],
    p: Float[Array, " n"],
    c1: float,
    max_backtracks: int,
    grad_norm: Float[Array, ""],
):
    """(t, f(z + t p), ∇f(z + t p), trials) for the first t meeting Armijo's condition
    (or, for t = 1 where rounding hides the decrease, the gradient test of the module
    docstring); t = 0 when none of the `max_backtracks` + 1 trials does (f and ∇f are
    then the last trial's, which the caller discards)."""
    noise = 10.0 * jnp.finfo(z.dtype).eps * jnp.abs(value)
    hidden = -slope <= noise  # the predicted decrease is below the values' rounding

    def sufficient(t, v, g):
        armijo = v <= value + c1 * t * slope  # False for NaN
        by_gradient = hidden & (t == 1.0) & (v <= value + noise) & (inf_norm(g) < grad_norm)
        return armijo | by_gradient

    def cond(carry):
        j, t, v, g = carry
        return (j < max_backtracks) & ~sufficient(t, v, g)

    def body(carry):
        j, t, v, _ = carry
        curvature = v - value - slope * t  # > 0 where Armijo fails for a finite v
        t_quad = -slope * t * t / (2.0 * curvature)
        t_new = jnp.where(jnp.isfinite(v) & (curvature > 0), jnp.where(t_quad < 0.1 * t, 0.1 * t, 0.5 * t), 0.5 * t)
        v_new, g_new = value_and_grad(z + t_new * p)
        return j + 1, t_new, v_new, g_new

    one = jnp.ones((), z.dtype)
    v1, g1 = value_and_grad(z + p)
    j, t, v, g = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), one, v1, g1))
    return jnp.where(sufficient(t, v, g), t, 0.0), v, g, j + 1


def newton(
    c1: float = 1e-4, max_backtracks: int = 40, max_step: float = 10.0, max_dim: int = 1000
) -> optax.GradientTransformationExtraArgs:
    """Newton's method with a shifted Cholesky factorisation and Armijo backtracking
    (module docstring).

    Args:
        c1: Armijo's sufficient-decrease constant, in (0, 1).
        max_step: the longest step, relative to max(1, ||z||_∞), in the ∞-norm (> 0).
        max_backtracks: line-search trials after the full step.
        max_dim: the largest number of parameters (Hessian n x n) accepted.

    `update` needs the extra arguments `value`, `grad` and `value_fn` (as `optax.lbfgs`):
    `updates, state = opt.update(grad, state, params, value=f, grad=grad, value_fn=f_fn)`.
    """
    check_range("newton: c1", c1, 0.0, 1.0, lo_open=True, hi_open=True)
    check_range("newton: max_step", max_step, 0.0, lo_open=True)
    check_count("newton: max_backtracks", max_backtracks, 0)
    check_count("newton: max_dim", max_dim, 1)

    def init(params) -> NewtonState:
        flat, _ = ravel_pytree(params)
        return NewtonState(
            value=jnp.asarray(jnp.inf, flat.dtype),
            grad=jax.tree_util.tree_map(jnp.zeros_like, params),
            num_linesearch_steps=jnp.asarray(0, jnp.int32),
        )

    def update(updates, state: NewtonState, params=None, *, value=None, grad=None, value_fn=None, **extra):
        if params is None or value_fn is None:
            raise ValueError("newton: update needs params and the extra argument value_fn (see optax.lbfgs)")
        flat, unravel = ravel_pytree(params)
        if flat.shape[0] > max_dim:
            raise ValueError(
                f"newton: {flat.shape[0]} parameters exceed max_dim={max_dim}; the n x n Hessian would be "
                "formed. Use optax.lbfgs() for large problems, or raise max_dim."
            )
        flat_fn = lambda z: value_fn(unravel(z))
        value_and_grad = jax.value_and_grad(flat_fn)
        if value is None:
            value = flat_fn(flat)
        g = ravel_pytree(updates if grad is None else grad)[0]
        p = _capped(newton_direction(jax.hessian(flat_fn)(flat), g), flat, max_step)
        t, v, g_new, trials = _armijo(
            value_and_grad, flat, value, g @ p, p, c1, max_backtracks, inf_norm(g)
        )
        moved = t > 0
        new_state = NewtonState(
            value=jnp.where(moved, v, value),
            grad=unravel(jnp.where(moved, g_new, g)),
            num_linesearch_steps=trials,
        )
        return unravel(jnp.where(moved, t * p, 0.0)), new_state

    return optax.GradientTransformationExtraArgs(init, update)
