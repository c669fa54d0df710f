"""What a solve returns: `Solution`, its `Status` codes, `Multipliers` and `Stats`.

Every field of a `Solution` describes the returned point `sol.x`. Statuses are data
(int32 arrays), never exceptions, so that a `jax.vmap`-ed batch reports each member's
own outcome.
"""

from __future__ import annotations

import enum
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree


class Status(enum.IntEnum):
    """Outcome of a solve. `jc.Status(int(sol.status))` names a status code.

    - CONVERGED: stationary (to `opt_tol`) and feasible (to `viol_tol`).
    - MAX_STEPS: the iteration budget ran out first.
    - STALLED: no further progress possible (line search failed, step below `step_tol`).
    - INFEASIBLE: stationary for the constraint violation while still infeasible
      (or bounds with lower > upper).
    - UNBOUNDED: the objective diverges to -inf on feasible points.
    - NONFINITE: NaN/Inf met with no finite way on (or a non-finite x0).
    """

    CONVERGED = 0
    MAX_STEPS = 1
    STALLED = 2
    INFEASIBLE = 3
    UNBOUNDED = 4
    NONFINITE = 5

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Status.CONVERGED: "converged: stationary and feasible to tolerance",
    Status.MAX_STEPS: "stopped: the maximum number of steps was reached",
    Status.STALLED: "stalled: no progress possible (line search or step tolerance)",
    Status.INFEASIBLE: "infeasible: stationary for the violation while infeasible",
    Status.UNBOUNDED: "unbounded: the objective decreases without bound on feasible points",
    Status.NONFINITE: "non-finite: NaN or Inf met with no finite way on",
}


class StopCause(enum.IntEnum):
    """Which test ended a STALLED run (`sol.stats.stop_cause`); NONE for every other status.

    - NONE: not stalled (the status says what happened).
    - LINE_SEARCH: no trial point along the search direction decreased the merit
      function enough, `max_search_failures` iterations running (SQP, ProjectedGradient).
    - SMALL_STEP: the accepted steps were below `step_tol` (relative), or zero.
    - QP_FAILED: the direction's QP failed and the fallback direction made no progress.
    - VIOLATION_STATIONARY: an infeasible iterate became stationary for the violation
      after a feasible point had been found (SQP; that point is returned).
    - NO_CHANGE: an outer iteration at the final inner tolerance changed nothing
      (ALM, Penalty).
    - PENALTY_LIMIT: as NO_CHANGE, with the penalty parameter at its limit (ρ = rho_max)
      while the constraints are still violated: a larger rho_max or rescaled
      constraints may help.
    """

    NONE = 0
    LINE_SEARCH = 1
    SMALL_STEP = 2
    QP_FAILED = 3
    VIOLATION_STATIONARY = 4
    NO_CHANGE = 5
    PENALTY_LIMIT = 6

    @property
    def description(self) -> str:
        return _CAUSES[self]


_CAUSES = {
    StopCause.NONE: "",
    StopCause.LINE_SEARCH: "the line search found no acceptable step",
    StopCause.SMALL_STEP: "steps below step_tol",
    StopCause.QP_FAILED: "the direction QP failed",
    StopCause.VIOLATION_STATIONARY: "stationary for the violation at an infeasible point",
    StopCause.NO_CHANGE: "an outer iteration changed nothing",
    StopCause.PENALTY_LIMIT: "the penalty parameter reached its limit",
}


def cause_name(code: int) -> str:
    """The name of a stop cause code, or `UNKNOWN(code)`."""
    try:
        return StopCause(int(code)).name
    except ValueError:
        return f"UNKNOWN({int(code)})"


def status_name(code: int) -> str:
    """The name of a status code, or `UNKNOWN(code)` for a code outside `Status`."""
    try:
        return Status(int(code)).name
    except ValueError:
        return f"UNKNOWN({int(code)})"


class Multipliers(eqx.Module):
    """Lagrange multipliers at `sol.x`, unscaled, for L = f + eq·λ + ineq·ν + bound terms.

    `eq` and `ineq` are shaped like the outputs of `problem.eq` / `problem.ineq`
    (None where the problem has none); `lower` and `upper` are shaped like x and are
    the (nonnegative) multipliers of `lower - x <= 0` and `x - upper <= 0`.
    """

    eq: PyTree[Float[Array, "..."]] | None
    ineq: PyTree[Float[Array, "..."]] | None
    lower: PyTree[Float[Array, "..."]] | None
    upper: PyTree[Float[Array, "..."]] | None


class Stats(eqx.Module):
    """Figures of merit at `sol.x` and counters of the run.

    - iterations: outer iterations taken (what `max_steps` bounds).
    - evaluations: objective/constraint evaluations (each value-and-gradient counts once).
    - stationarity: the solver's stationarity measure at `sol.x` (see each solver).
    - violation: max violation of equalities, inequalities and bounds at `sol.x`.
    - inner_iterations: inner iterations (penalty/ALM sub-solves; equals iterations
      for single-loop methods).
    - stop_cause: for a STALLED run, the `StopCause` (which test stopped it); NONE
      otherwise.
    """

    iterations: Int[Array, ""]
    evaluations: Int[Array, ""]
    stationarity: Float[Array, ""]
    violation: Float[Array, ""]
    inner_iterations: Int[Array, ""]
    stop_cause: Int[Array, ""]


class Solution(eqx.Module):
    """The result of `jc.solve`.

    `x` is the returned point (the best feasible point found, else the most feasible
    one); `f`, `multipliers` and `stats` describe `x`. `state` is the solver's final
    state, accepted by `jc.solve(..., warm_start=sol.state)`.
    """

    x: PyTree[Any]
    f: Float[Array, ""]
    status: Int[Array, ""]
    multipliers: Multipliers
    stats: Stats
    state: Any

    @property
    def success(self) -> Bool[Array, ""]:
        """`status == Status.CONVERGED`, as a bool array (batched under vmap)."""
        return jnp.asarray(self.status) == Status.CONVERGED

    @property
    def status_name(self) -> str | list[str]:
        """The status by name, e.g. "CONVERGED"; a list of names for a batch (a
        `jax.vmap`-ed Solution). Needs a concrete status (not inside jit)."""
        codes = np.asarray(self.status)
        if codes.ndim == 0:
            return status_name(int(codes))
        return [status_name(int(c)) for c in codes.reshape(-1)]

    def summary(self) -> str:
        """One line: `CONVERGED: f = 1.7014e+01, violation 1.8e-11, stationarity 3.1e-09,
        9 iterations`; for a batch a count of the statuses, `64 solves: 62 CONVERGED,
        2 MAX_STEPS`. Needs concrete values (not inside jit)."""
        if np.ndim(self.status) > 0:
            names = self.status_name
            order = [s.name for s in Status] + sorted(set(names) - set(Status.__members__))
            counts = ", ".join(f"{names.count(n)} {n}" for n in order if n in names)
            return f"{len(names)} solve{'s' if len(names) != 1 else ''}: {counts}"
        cause = int(self.stats.stop_cause)
        label = self.status_name + (f" ({cause_name(cause).lower().replace('_', ' ')})" if cause else "")
        return (
            f"{label}: f = {float(self.f):.8e}, violation {float(self.stats.violation):.1e}, "
            f"stationarity {float(self.stats.stationarity):.1e}, {int(self.stats.iterations)} iterations"
        )

    def __str__(self) -> str:
        return f"Solution({self.summary()})" if _is_concrete(self.status) else super().__repr__()

    def __repr__(self) -> str:
        return self.__str__()


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer) and isinstance(x, (jax.Array, np.ndarray, np.generic, int))
