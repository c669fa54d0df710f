"""What jc.SQP knows about a point: f, ∇f, the stacked constraints c and their Jacobian J.

All constraints — equalities c_E, inequalities c_I and finite bounds (as rows
l - x <= 0, x - u <= 0) — are stacked into c ∈ R^m with Jacobian J (m x n, one
`jax.jacrev` call for all general rows; bound rows are written down). f and c are
scaled (`scale_f`, `scale_c`, see `jc.SQP.prescale`); the measures here are

    v(x) = ||c_E(x)||_1 + ||max(c_I(x), 0)||_1          (l1 violation, the merit's)
    max_i violation_i                                  (what `Solution` reports)
    φ_μ(x) = μ f(x) + v(x)                             (the exact-penalty merit)
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from jconstrain._problem import FlatProblem


class Model(eqx.Module):
    """First-order information at z: f, ∇f, stacked constraints c and Jacobian J."""

    z: Float[Array, " n"]
    f: Float[Array, ""]
    g: Float[Array, " n"]
    c: Float[Array, " m"]
    J: Float[Array, "m n"]


class Rows(eqx.Module):
    """Which stacked rows are equalities, which are bounds, and which exist (infinite
    bounds do not)."""

    is_eq: Bool[Array, " m"]
    is_bound: Bool[Array, " m"]
    on: Bool[Array, " m"]
    n_general: int = eqx.field(static=True)

    def dual_box(self, dtype) -> tuple[Array, Array]:
        """Box of the steering QP's dual: [-1, 1] for equalities, [0, 1] for inequalities
        (penalised), [0, ∞) for bounds (hard: every step keeps them)."""
        lo = jnp.where(self.is_eq, -1.0, 0.0).astype(dtype)
        hi = jnp.where(self.is_bound, jnp.inf, 1.0).astype(dtype)
        return lo, hi


class Tracked(eqx.Module):
    """A remembered iterate with what the Solution reports about it.

    `violation` is the max violation of the unscaled constraints (what `Solution`
    reports); `l1_violation` the l1 violation of the scaled ones, the measure the
    method minimises while infeasible, by which the most-feasible point is chosen.
    """

    z: Float[Array, " n"]
    f: Float[Array, ""]
    violation: Float[Array, ""]
    l1_violation: Float[Array, ""]
    stationarity: Float[Array, ""]
    y: Float[Array, " m"]


def tracked_record(model: Model, rows: Rows, scale_f: Array, scale_c: Array, stationarity: Array, y: Array) -> Tracked:
    """The `Tracked` record of a (scaled) model."""
    return Tracked(
        z=model.z,
        f=model.f / scale_f,
        violation=violations(model.c / scale_c, rows)[1],
        l1_violation=violations(model.c, rows)[0],
        stationarity=stationarity,
        y=y,
    )


def stacked_rows(problem: FlatProblem) -> Rows:
    m_general = problem.m_eq + problem.m_ineq
    m = m_general + (2 * problem.n if problem.has_bounds else 0)
    is_eq = np.zeros(m, bool)
    is_eq[: problem.m_eq] = True
    is_bound = np.zeros(m, bool)
    is_bound[m_general:] = True
    on = jnp.ones((m_general,), bool)
    if problem.has_bounds:
        on = jnp.concatenate([on, jnp.isfinite(problem.lower), jnp.isfinite(problem.upper)])
    return Rows(is_eq=jnp.asarray(is_eq), is_bound=jnp.asarray(is_bound), on=on, n_general=m_general)


def general_constraints(problem: FlatProblem, z: Array, args: Any) -> Array:
    return jnp.concatenate([problem.eq(z, args), problem.ineq(z, args)])


def bound_rows(problem: FlatProblem, z: Array) -> tuple[Array, Array]:
    """Values and Jacobian of l - z <= 0 and z - u <= 0 (value -1 where the bound is infinite)."""
    if not problem.has_bounds:
        return jnp.zeros((0,), z.dtype), jnp.zeros((0, problem.n), z.dtype)
    lower = jnp.where(jnp.isfinite(problem.lower), problem.lower - z, -1.0)
    upper = jnp.where(jnp.isfinite(problem.upper), z - problem.upper, -1.0)
    eye = jnp.eye(problem.n, dtype=z.dtype)
    J = jnp.concatenate([-eye * jnp.isfinite(problem.lower)[:, None], eye * jnp.isfinite(problem.upper)[:, None]])
    return jnp.concatenate([lower, upper]), J


def evaluate(problem: FlatProblem, z: Array, args: Any, scale_f: Array, scale_c: Array) -> Model:
    """f, ∇f, c and J at z in one reverse-mode pass (jacrev over [f; c_general])."""

    def stacked(z):
        return jnp.concatenate([problem.objective(z, args)[None], general_constraints(problem, z, args)])

    values, jac = stacked(z), jax.jacrev(stacked)(z)
    c_b, J_b = bound_rows(problem, z)
    c = jnp.concatenate([values[1:], c_b]) * scale_c
    J = jnp.concatenate([jac[1:], J_b]) * scale_c[:, None]
    return Model(z=z, f=values[0] * scale_f, g=jac[0] * scale_f, c=c, J=J)


def violations(c: Array, rows: Rows) -> tuple[Array, Array]:
    """(l1 violation v, max violation) of stacked constraint values."""
    parts = jnp.where(rows.is_eq, jnp.abs(c), jnp.maximum(c, 0)) * rows.on
    return jnp.sum(parts), jnp.max(parts, initial=0.0)


def merit_values(problem: FlatProblem, z: Array, args: Any, rows: Rows, mu: Array, scale_f: Array, scale_c: Array):
    """(φ_μ(z), v(z), c(z)) of the scaled problem, from values only (no derivatives)."""
    c_b, _ = bound_rows(problem, z)
    c = jnp.concatenate([general_constraints(problem, z, args), c_b]) * scale_c
    v, _ = violations(c, rows)
    return mu * problem.objective(z, args) * scale_f + v, v, c


def all_finite(model: Model) -> Array:
    return (
        jnp.isfinite(model.f)
        & jnp.all(jnp.isfinite(model.g))
        & jnp.all(jnp.isfinite(model.c))
        & jnp.all(jnp.isfinite(model.J))
    )


def prescaling(unscaled: Model, threshold: Array | None) -> tuple[Array, Array]:
    """PyGRANSO's prescaling at x0: (scale_f, scale_c) = min(1, threshold/||∇||_∞) of f and
    of each constraint row; a row whose gradient is nonzero but below 1e-2 is scaled up to
    ||∇||_∞ = 1e-2 (by at most 1e8). Non-finite scales become 1; all are 1 without a
    threshold (no prescaling)."""
    one = jnp.ones((), unscaled.f.dtype)
    if threshold is None:
        return one, jnp.ones_like(unscaled.c)
    thr = jnp.asarray(threshold, unscaled.f.dtype)
    norm = lambda v: jnp.max(jnp.abs(v), axis=-1, initial=0.0)
    scale_f = jnp.minimum(1.0, thr / jnp.maximum(norm(unscaled.g), 1e-300))
    row_norm = norm(unscaled.J)
    scale_c = jnp.minimum(1.0, thr / jnp.maximum(row_norm, 1e-300))
    # Rows with a tiny (nonzero) gradient are scaled up to ||∇||_∞ = 1e-2: otherwise
    # their violation, however large, looks stationary next to well-scaled rows
    # (1e-6 (x1 - 0.5) <= 0 beside 1e6-scaled equalities ended INFEASIBLE).
    tiny = (row_norm > 0) & (row_norm < 1e-2)
    scale_c = jnp.where(tiny, jnp.minimum(1e-2 / jnp.where(tiny, row_norm, 1.0), 1e8), scale_c)
    scale_f = jnp.where(jnp.isfinite(scale_f), scale_f, one)
    scale_c = jnp.where(jnp.isfinite(scale_c), scale_c, one)
    return scale_f, scale_c


def scaled(unscaled: Model, scale_f: Array, scale_c: Array) -> Model:
    """The model of the scaled problem (f·scale_f, c·scale_c)."""
    return Model(
        z=unscaled.z,
        f=unscaled.f * scale_f,
        g=unscaled.g * scale_f,
        c=unscaled.c * scale_c,
        J=unscaled.J * scale_c[:, None],
    )
