"""jconstrain: constrained optimisation in JAX.

    import jconstrain as jc
    problem = jc.Problem(objective=f, eq=h, ineq=g, bounds=(lower, upper))
    sol = jc.solve(problem, x0, jc.Penalty())
"""

from jconstrain.problem import Problem
from jconstrain.solution import Multipliers, Solution, Stats, Status
from jconstrain.solve import solve
from jconstrain.transforms import projected
from jconstrain import projections, qp, reparam
from jconstrain.solvers import SQP, AbstractSolver, Penalty

__all__ = [
    "AbstractSolver",
    "Multipliers",
    "Penalty",
    "SQP",
    "Problem",
    "Solution",
    "Stats",
    "Status",
    "projected",
    "projections",
    "qp",
    "reparam",
    "solve",
]
__version__ = "0.1.0"
