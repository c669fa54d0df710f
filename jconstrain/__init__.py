"""jconstrain: constrained optimisation in JAX.

    import jconstrain as jc
    problem = jc.Problem(objective=f, eq=h, ineq=g, bounds=(lower, upper))
    sol = jc.solve(problem, x0, jc.Penalty())
"""

from jconstrain.fold import fold
from jconstrain.newton import newton
from jconstrain.problem import Problem
from jconstrain.solution import Multipliers, Solution, Stats, Status
from jconstrain.solve import solve
from jconstrain.transforms import projected
from jconstrain import batch, projections, qp, reparam, train
from jconstrain.solvers import SQP, AbstractSolver, AugmentedLagrangian, Penalty, ProjectedGradient

__all__ = [
    "AbstractSolver",
    "AugmentedLagrangian",
    "Multipliers",
    "Penalty",
    "SQP",
    "Problem",
    "ProjectedGradient",
    "Solution",
    "Stats",
    "batch",
    "fold",
    "newton",
    "Status",
    "projected",
    "projections",
    "qp",
    "reparam",
    "solve",
    "train",
]
__version__ = "0.1.0"
