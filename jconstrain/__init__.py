"""jconstrain: constrained optimisation in JAX.

    import jconstrain as jc
    problem = jc.Problem(objective=f, eq=h, ineq=g, bounds=(lower, upper))
    sol = jc.solve(problem, x0, jc.Penalty())

The public names are those in `__all__` (and what `dir(jc)` lists); modules whose names
start with `_` are internal. A third-party solver subclasses `jc.AbstractSolver`, works on
a `jc.FlatProblem` and returns a `jc.Report` (and `jc.Progress` rows for `verbose`).
"""

from jconstrain._fold import fold
from jconstrain._newton import newton
from jconstrain._problem import FlatProblem, Problem
from jconstrain._solution import Multipliers, Solution, Stats, Status, StopCause
from jconstrain._solve import solve
from jconstrain._transforms import projected
from jconstrain import batch, projections, qp, reparam, train
from jconstrain._solvers import (
    SQP,
    AbstractSolver,
    AugmentedLagrangian,
    Penalty,
    Progress,
    ProjectedGradient,
    Report,
)

__all__ = [
    "AbstractSolver",
    "AugmentedLagrangian",
    "FlatProblem",
    "Multipliers",
    "Penalty",
    "Problem",
    "Progress",
    "ProjectedGradient",
    "Report",
    "SQP",
    "Solution",
    "Stats",
    "Status",
    "StopCause",
    "batch",
    "fold",
    "newton",
    "projected",
    "projections",
    "qp",
    "reparam",
    "solve",
    "train",
]
__version__ = "0.1.0"


def __dir__() -> list[str]:
    """Tab completion and `dir(jc)` show the public names only."""
    return sorted(__all__ + ["__version__"])
