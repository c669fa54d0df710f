"""The solver protocol every method implements; `jc.solve` only drives it.

    state = solver.init(problem, z0, args, warm_start)
    while not done and k < max_steps:
        state = solver.step(problem, state, args, active=~done)
        done, status = solver.terminate(problem, state, args)
    report = solver.report(problem, state, args)

All of it works on the flat vector z of `FlatProblem`; `solve` turns the `Report`
back into the user's pytrees.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jconstrain import _implicit as implicit
from jconstrain._misc import inf_norm
from jconstrain._problem import FlatProblem


class Report(eqx.Module):
    """A solver's account of the point it returns, on flat vectors.

    Multipliers follow L = f + y_eq·c_E + y_ineq·c_I + z_upper·(z - u) + z_lower·(l - z).
    `stop_cause` is the `StopCause` code the solver gives for a STALLED end (`solve`
    reports NONE for every other status).
    """

    z: Float[Array, " n"]
    f: Float[Array, ""]
    y_eq: Float[Array, " me"]
    y_ineq: Float[Array, " mi"]
    z_lower: Float[Array, " n"]
    z_upper: Float[Array, " n"]
    stationarity: Float[Array, ""]
    violation: Float[Array, ""]
    evaluations: Int[Array, ""]
    inner_iterations: Int[Array, ""]
    stop_cause: Int[Array, ""] | int = 0


class Progress(eqx.Module):
    """One row of the `verbose=True` iteration table."""

    f: Float[Array, ""]
    violation: Float[Array, ""]
    stationarity: Float[Array, ""]
    step: Float[Array, ""]
    penalty: Float[Array, ""]


class AbstractSolver(eqx.Module):
    """Base of every jconstrain solver.

    Subclasses hold their hyperparameters as fields (float tolerances dynamic, so a
    sweep can vmap over them; `max_steps` static) and implement the five methods.
    """

    penalty_label: ClassVar[str] = "penalty"

    @property
    @abc.abstractmethod
    def steps(self) -> int:
        """The default cap on outer iterations (`solve(max_steps=...)` overrides it)."""

    @abc.abstractmethod
    def init(self, problem: FlatProblem, z0: Array, args: Any, warm_start: Any) -> Any:
        """The initial state at z0, reusing `warm_start` (a previous state) if given."""

    @abc.abstractmethod
    def step(self, problem: FlatProblem, state: Any, args: Any, active: Bool[Array, ""] | bool = True) -> Any:
        """One outer iteration.

        `active` is False for a member of a `jax.vmap`-ed batch that has already
        finished: `solve` discards its step, so the step may skip its work. Under vmap
        every inner `lax.while_loop` runs as long as its slowest member needs; a solver
        stops its inner loops at once for inactive members (their loop conditions are
        and-ed with `active`), so finished members do not dictate the batch's cost.
        """

    @abc.abstractmethod
    def terminate(self, problem: FlatProblem, state: Any, args: Any) -> tuple[Bool[Array, ""], Int[Array, ""]]:
        """(done, status): whether to stop now, and the `Status` code if so."""

    @abc.abstractmethod
    def report(self, problem: FlatProblem, state: Any, args: Any) -> Report:
        """The returned point and everything `Solution` says about it."""

    @abc.abstractmethod
    def progress(self, state: Any) -> Progress:
        """The current row of the iteration table."""

    def adjoint(
        self, problem: FlatProblem, point: implicit.SolutionPoint, status: Int[Array, ""], args: Any
    ) -> implicit.SolutionPoint:
        """`point` (the reported z, f and multipliers; primal values unchanged) made
        differentiable in (args, bounds) by implicit differentiation of the method's
        optimality conditions. By default the KKT conditions (`implicit.kkt_solution`);
        a method whose solutions are characterised otherwise overrides this."""
        return implicit.kkt_solution(problem, point, status, args)


def dtype_tol(tol: Float[Array, ""] | float, dtype: Any, floor_eps: float = 100.0) -> Float[Array, ""]:
    """max(tol, floor_eps * eps(dtype)): a tolerance the dtype can actually reach."""
    return jnp.maximum(jnp.asarray(tol, dtype), floor_eps * jnp.finfo(dtype).eps)


def rounding_level(c: Float[Array, " m"], terms: Float[Array, " m"]) -> Float[Array, " m"]:
    """eps·(|c_i| + t_i): the rounding error of computed constraint values, t_i being the
    size of the terms c_i(z) is summed from (about Σ_j |∂c_i/∂z_j| |z_j|).

    A value such as Σ w² - 40 or 25 - Π w carries an absolute error of a few eps times its
    terms, however small c_i itself is: below this level the sign of c_i is not known.
    Rows with a non-finite value (absent bounds, c = -inf) get 0.
    """
    eps = jnp.finfo(c.dtype).eps
    level = eps * (jnp.abs(c) + terms)
    return jnp.where(jnp.isfinite(level), level, 0.0)


def escape_point(
    z: Float[Array, " n"], radius: Array, seed: Int[Array, ""], lower: Array, upper: Array
) -> Float[Array, " n"]:
    """A random restart near z: z + r ξ clipped to [lower, upper], ξ uniform in
    [-1, 1]^n (a fixed key folded with `seed`), r = radius · max(1, ||z||_∞).

    Where an infeasible point is stationary for the violation it may be a saddle or a
    maximum (e.g. where ∇c = 0), or a local minimiser of the violation: a start whose
    violation falls shows the way on. The callers choose the radius of their k-th escape.
    """
    key = jax.random.fold_in(jax.random.PRNGKey(0), seed)
    xi = jax.random.uniform(key, z.shape, z.dtype, -1.0, 1.0)
    radius = jnp.asarray(radius, z.dtype) * jnp.maximum(1.0, inf_norm(z))
    return jnp.clip(z + radius * xi, lower, upper)
