"""Derivatives of a solution with respect to the problem's parameters, by implicit
differentiation of the optimality conditions at the returned point.

A solve is a `lax.while_loop`, which JAX can differentiate forward but not in reverse,
and whose iterates' derivatives would in any case describe the path, not the answer.
`jc.solve` therefore runs the loop on `lax.stop_gradient`-ed inputs and passes the
returned point through one of the two functions here. Each is the identity on its
primal values (so a solve nobody differentiates computes nothing extra) and carries a
`custom_jvp` rule that differentiates the conditions that define the solution:

KKT solutions (`kkt_solution`; `jc.SQP`, `jc.AugmentedLagrangian`, `jc.Penalty`).
With θ = (args, l, u) and the bound constraints written as inequalities
c_B = (c_I, l - z, z - u) with multipliers ν = (ν_I, ν_lower, ν_upper), the returned
(z*, λ*, ν*) satisfies

    ∇_z L(z*, λ*, ν*; θ) = 0,   c_E(z*; θ) = 0,   c_j(z*; θ) = 0 for j in A,
    L = f + λ·c_E + ν·c_B,

where A, the active set, is read from the multipliers: A = {j : ν_j > τ s} with
τ = sqrt(eps) of the dtype and s = max(1, ||∇f(z*)||_∞). Differentiating these equations
along a tangent dθ gives the linear KKT system

    [ H        J_Eᵀ   J_Bᵀ D ] [dz]      [ ∂_θ ∇_z L · dθ ]
    [ J_E      0      0      ] [dλ]  = - [ ∂_θ c_E · dθ   ]
    [ D J_B    0      I - D  ] [dν]      [ D ∂_θ c_B · dθ ]

with H = ∇²_zz L (exact, forward-over-reverse), J_E, J_B the constraint Jacobians and
D = diag(1 if j in A else 0): active constraints stay active to first order, inactive
multipliers stay zero (dν_j = 0). sol.f's tangent is ∇f·dz + ∂_θ f·dθ.

Projection solutions (`fixed_point_solution`; `jc.ProjectedGradient`, whose feasible
set is given by a projection P and has no multipliers). z* is a fixed point of the
projected-gradient map with unit step, the same map whose residual the solver's
stationarity measures:

    F(z; θ) = z - P_θ(z - ∇f(z; θ)) = 0,   so   ∂_z F dz = -∂_θ F dθ,
    ∂_z F = I - ∂P (I - H),  H = ∇²f.

Bound multipliers max(±∇f, 0) on the active bounds get the tangent of ±∇f there.

The tangent is linear in dθ (a jvp along dθ, then a fixed matrix applied to it), so
JAX transposes it and `jax.grad`, `jax.jacrev`, `jax.jacfwd` and `jax.vmap` of them
all work. Only first derivatives are implicit: differentiating twice differentiates
the rule itself at a fixed z*, which is not the second derivative of the solution.

Degenerate points. The linear system is solved through an SVD of its matrix K. K is
singular exactly when the derivative of the solution is not determined by the
active-set conditions: LICQ fails (dependent active constraints, e.g. more active
constraints than variables or a constraint stated twice) or the second-order
condition fails (H singular on the null space of the active constraints: a non-unique
solution). K's zero singular values (<= 10 N eps times the largest) are dropped (a least-norm,
least-squares solve): when its null space lies in the multiplier coordinates only
(dependent active constraints, e.g. one stated twice with multipliers [0.5, 0.5]), dz
is still determined and the multiplier tangents are the least-norm ones. If the null
space reaches z (the solution is not locally unique) at a CONVERGED solution,
differentiating raises a runtime error through
`equinox.error_if` (under `jit` too; under `vmap` one singular member raises for the
batch). At a point the solver did not certify (status other than CONVERGED) a singular
K gives NaN tangents instead of an error, so that one failed member of a batch does not
stop the others: its status already says what went wrong.

Weakly active constraints (c_j = 0 with ν_j <= τ s, strict complementarity failing)
are the documented fallback: they are treated as inactive. There the solution map has
a kink (e.g. z*(a) = min(a, 0) at a = 0) and no derivative; treating the constraint as
inactive gives the one-sided derivative for perturbations that keep it satisfied, one
element of the generalised Jacobian, as ReLU'(0) = 0 does for a ReLU.

Non-CONVERGED solutions (MAX_STEPS, STALLED, ...) get the same tangent: the KKT (or
fixed-point) tangent at the returned point with its multipliers, as if it were the
solution. It is as accurate as the point is close to satisfying the conditions; check
`sol.success` (a STALLED solve of a smooth problem at the rounding limit is usually
fine, a MAX_STEPS solve far from convergence is not). Penalty solutions are only
approximately feasible, so their derivatives are accurate to the same O(1/ρ).

Smoothness. Implicit differentiation assumes f, c_E, c_I twice differentiable at z*
and in θ. At a nonsmooth minimiser (max, abs, norms at their kinks) the Hessian and
Jacobians JAX returns are one choice of element of a generalised derivative and the
tangent is a heuristic, not a derivative.

Parameters. θ is what reaches the problem through `args`, the bounds, and traced
arrays the problem's functions close over (`hoist_closures` moves those into args, so
`jax.grad(lambda t: jc.solve(jc.Problem(lambda x, a: f(x, t)), x0, solver).f)` works).
x0 and warm_start are not parameters: their derivatives are zero. Solver
hyperparameters (tolerances) are not differentiable.

Cost. Only when differentiating: one Hessian of the Lagrangian and the constraint
Jacobians (n forward-over-reverse passes), and an SVD of an N x N matrix,
N = n + m_E + m_I (+ 2n with bounds); meant for small-to-medium n.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jconstrain._problem import FlatProblem, Problem, inequalities_with_bounds
from jconstrain._solution import Status

_SINGULAR_MESSAGE = (
    "jc.solve: cannot differentiate this solution: the linearised optimality conditions "
    "at sol.x are singular (the KKT matrix of the active constraints, or for "
    "ProjectedGradient the Jacobian of the fixed-point map). The active constraints are "
    "linearly dependent (LICQ fails: e.g. a constraint stated twice, or more active "
    "constraints than variables) or the solution is not locally unique (the Hessian of "
    "the Lagrangian is singular on the active constraints' null space). "
    "See jconstrain._implicit."
)


class SolutionPoint(eqx.Module):
    """The differentiable part of a solution, on flat vectors: z, f(z) and the multipliers
    (for L = f + y_eq·c_E + y_ineq·c_I + z_lower·(l - z) + z_upper·(z - u))."""

    z: Float[Array, " n"]
    f: Float[Array, ""]
    y_eq: Float[Array, " me"]
    y_ineq: Float[Array, " mi"]
    z_lower: Float[Array, " n"]
    z_upper: Float[Array, " n"]


def stop_gradient(tree: Any) -> Any:
    """`lax.stop_gradient` on every inexact-array leaf of `tree`; other leaves unchanged."""
    return jax.tree_util.tree_map(lambda x: jax.lax.stop_gradient(x) if eqx.is_inexact_array(x) else x, tree)


def stop_problem_gradient(problem: FlatProblem) -> FlatProblem:
    """The flat problem with its (possibly traced) bounds cut from differentiation."""
    return eqx.tree_at(lambda p: (p.lower, p.upper), problem, stop_gradient((problem.lower, problem.upper)))


def hoist_closures(problem: Problem, x0: Any, args: Any) -> tuple[Problem, Any]:
    """(problem, args) with the traced arrays that the objective and constraints close
    over moved into args, so that the solve can cut them from the loop's derivatives and
    differentiate the solution in them (a closed-over tracer would otherwise leak into
    the `while_loop` and the implicit rule).

    Functions that close over no tracer are returned unchanged (the usual case: nothing
    is re-traced). Otherwise each function becomes `equinox.filter_closure_convert`'s
    jaxpr of it, called with the user's args as `a[0]` and the converted functions,
    whose leaves are the closed-over arrays, as `a[1]`.
    """
    names = [name for name in ("objective", "eq", "ineq") if getattr(problem, name) is not None]
    converted = {name: eqx.filter_closure_convert(getattr(problem, name), x0, args) for name in names}
    if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(converted)):
        return problem, args

    def call(name: str) -> Callable[[Any, Any], Any] | None:
        if name not in converted:
            return None
        return lambda x, a: a[1][name](x, a[0])

    hoisted = Problem(objective=call("objective"), eq=call("eq"), ineq=call("ineq"), bounds=problem.bounds)
    return hoisted, (args, converted)


def kkt_solution(problem: FlatProblem, point: SolutionPoint, status: Int[Array, ""], args: Any) -> SolutionPoint:
    """`point` unchanged, differentiable in (args, bounds) through the KKT conditions of
    `problem` at it (see the module docstring). `point` must not depend on args by
    itself: compute it from `stop_gradient`-ed inputs."""
    return _kkt_identity(problem, point, status, args)


def fixed_point_solution(
    problem: FlatProblem,
    point: SolutionPoint,
    status: Int[Array, ""],
    args: Any,
    project: Callable[[FlatProblem, Array], Array],
) -> SolutionPoint:
    """`point` unchanged, differentiable in (args, bounds) through the fixed-point
    equation z = P(z - ∇f(z)), where `project(problem, z)` is P for the problem's bounds."""
    return _fixed_point_identity(problem, point, status, args, project=project)


# ------------------------------------------------------------------ shared pieces


def _parameters(problem: FlatProblem, args: Any, t_problem: Any, t_args: Any):
    """Split θ = (args, l, u) into its differentiated leaves and a rebuild function.

    Returns (theta, t_theta, rebuild) with rebuild(theta) -> (problem, args): the
    problem with bounds and the args carrying the leaves in `theta` (the other leaves
    fixed), so that jvps along t_theta differentiate in exactly the perturbed leaves.
    """
    leaves, treedef = jax.tree_util.tree_flatten(args)
    t_leaves = treedef.flatten_up_to(t_args) if t_args is not None else [None] * len(leaves)
    which = [i for i, t in enumerate(t_leaves) if t is not None]
    t_lower = getattr(t_problem, "lower", None) if t_problem is not None else None
    t_upper = getattr(t_problem, "upper", None) if t_problem is not None else None
    zeros = lambda x: jnp.zeros_like(x)
    theta = ([leaves[i] for i in which], problem.lower, problem.upper)
    t_theta = (
        [t_leaves[i] for i in which],
        zeros(problem.lower) if t_lower is None else t_lower,
        zeros(problem.upper) if t_upper is None else t_upper,
    )

    def rebuild(theta):
        args_leaves, lower, upper = theta
        new = list(leaves)
        for i, v in zip(which, args_leaves):
            new[i] = v
        p = eqx.tree_at(lambda q: (q.lower, q.upper), problem, (lower, upper))
        return p, jax.tree_util.tree_unflatten(treedef, new)

    return theta, t_theta, rebuild


def _solve_linear(K: Array, rhs: Array, status: Int[Array, ""], n_z: int) -> Array:
    """K⁺ rhs, the least-norm least-squares solution, through the SVD K = U S Vᵀ.

    Singular values <= 10 N eps s_max count as zero. Where K's null space (those rows
    of Vᵀ) lies in the multiplier coordinates only, the derivative of z is still
    determined: dependent active constraints (e.g. one stated twice) leave the
    multipliers' split open, and K⁺ takes the least-norm multiplier tangents. Where the
    null space reaches the first `n_z` (z) coordinates the solution is not locally
    unique: raise (CONVERGED) or NaN (any other status). Linear in rhs, so JAX can
    transpose it."""
    n = K.shape[0]
    u, s, vt = jnp.linalg.svd(K)
    eps = jnp.finfo(K.dtype).eps
    finite = jnp.all(jnp.isfinite(s)) & jnp.all(jnp.isfinite(vt))
    zero = s <= 10 * n * eps * s[0]
    reach = jnp.max(jnp.where(zero[:, None], jnp.abs(vt[:, :n_z]), 0.0), initial=0.0)
    singular = ~finite | (reach > jnp.sqrt(eps))
    s = eqx.error_if(s, singular & (status == Status.CONVERGED), _SINGULAR_MESSAGE)
    inv_s = jnp.where(singular, jnp.nan, jnp.where(zero, 0.0, 1 / jnp.where(zero, 1.0, s)))
    return vt.T @ (inv_s * (u.T @ rhs))


# ------------------------------------------------------------------ KKT conditions


@eqx.filter_custom_jvp
def _kkt_identity(problem, point, status, args):
    return point


@_kkt_identity.def_jvp
def _kkt_jvp(primals, tangents):
    problem, point, status, args = primals
    t_problem, _, _, t_args = tangents  # z*, multipliers and status are not inputs of the solution
    theta, t_theta, rebuild = _parameters(problem, args, t_problem, t_args)
    z = point.z
    dtype = z.dtype
    n, me = problem.n, problem.m_eq
    if problem.has_bounds:
        nu = jnp.concatenate([point.y_ineq, point.z_lower, point.z_upper])
    else:
        nu = point.y_ineq

    def parts(z, theta):
        p, a = rebuild(theta)
        return p.objective(z, a), p.eq(z, a), inequalities_with_bounds(p, z, a)

    def lagrangian(z, theta):
        f, c_eq, c_b = parts(z, theta)
        return f + jnp.dot(point.y_eq, c_eq) + jnp.dot(nu, _finite(c_b))

    def conditions(z, theta):
        """(∇_z L, f, c_E, c_B) at (z, θ): what the KKT system differentiates."""
        f, c_eq, c_b = parts(z, theta)
        return jax.grad(lagrangian)(z, theta), f, c_eq, _finite(c_b)

    # The matrix: H = ∇²L, ∇f and the Jacobians in one forward pass over z (n jvps).
    H, g_f, J_E, J_B = jax.jacfwd(conditions)(z, theta)
    scale = jnp.maximum(1.0, jnp.max(jnp.abs(g_f), initial=0.0))
    active = nu > jnp.sqrt(jnp.finfo(dtype).eps) * scale
    D = active.astype(dtype)
    mb = nu.shape[0]
    K = jnp.block(
        [
            [H, J_E.T, J_B.T * D],
            [J_E, jnp.zeros((me, me), dtype), jnp.zeros((me, mb), dtype)],
            [D[:, None] * J_B, jnp.zeros((mb, me), dtype), jnp.diag(1 - D)],
        ]
    )
    # The right-hand side: the conditions' derivative along dθ at fixed (z, y, ν).
    _, (d_grad_l, d_f, d_c_eq, d_c_b) = jax.jvp(lambda th: conditions(z, th), (theta,), (t_theta,))
    rhs = -jnp.concatenate([d_grad_l, d_c_eq, D * d_c_b])
    dx = _solve_linear(K, rhs.astype(dtype), status, n)
    dz, dy_eq, dnu = dx[:n], dx[n : n + me], dx[n + me :]
    dy_ineq = dnu[: problem.m_ineq]
    if problem.has_bounds:
        dz_lower = dnu[problem.m_ineq : problem.m_ineq + n]
        dz_upper = dnu[problem.m_ineq + n :]
    else:
        dz_lower = dz_upper = jnp.zeros_like(z)
    t_point = SolutionPoint(
        z=dz,
        f=jnp.dot(g_f, dz) + d_f,
        y_eq=dy_eq,
        y_ineq=dy_ineq,
        z_lower=dz_lower,
        z_upper=dz_upper,
    )
    return point, t_point


def _finite(c: Array) -> Array:
    """c with -inf (the residuals of absent bounds) replaced by -1: never active."""
    return jnp.where(jnp.isfinite(c), c, -1.0).astype(c.dtype)


# ------------------------------------------------------------------ projection fixed point


@eqx.filter_custom_jvp
def _fixed_point_identity(problem, point, status, args, *, project):
    return point


@_fixed_point_identity.def_jvp
def _fixed_point_jvp(primals, tangents, *, project):
    problem, point, status, args = primals
    t_problem, _, _, t_args = tangents
    theta, t_theta, rebuild = _parameters(problem, args, t_problem, t_args)
    z = point.z

    def gradient(z, theta):
        p, a = rebuild(theta)
        return jax.value_and_grad(p.objective)(z, a)

    def residual(z, theta):
        """F(z; θ) = z - P(z - ∇f(z)), with ∇f and f alongside."""
        p, _ = rebuild(theta)
        f, g = gradient(z, theta)
        return z - project(p, z - g), (g, f)

    K = jax.jacfwd(lambda z: residual(z, theta)[0])(z)
    H = jax.jacfwd(lambda z: gradient(z, theta)[1])(z)
    _, (d_res, (d_g, d_f)) = jax.jvp(lambda th: residual(z, th), (theta,), (t_theta,))
    g = gradient(z, theta)[1]
    dz = _solve_linear(K, -d_res, status, problem.n)  # all of K is z: any null space raises
    d_grad = H @ dz + d_g  # the total tangent of ∇f(z*(θ); θ)
    zero = jnp.zeros_like(z)
    t_point = SolutionPoint(
        z=dz,
        f=jnp.dot(g, dz) + d_f,
        y_eq=jnp.zeros_like(point.y_eq),
        y_ineq=jnp.zeros_like(point.y_ineq),
        z_lower=jnp.where(point.z_lower > 0, d_grad, zero),
        z_upper=jnp.where(point.z_upper > 0, -d_grad, zero),
    )
    return point, t_point
