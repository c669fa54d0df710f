"""The solvers behind `jc.solve`, one module a method."""

from jconstrain.solvers.alm import AugmentedLagrangian
from jconstrain.solvers.base import AbstractSolver
from jconstrain.solvers.penalty import Penalty
from jconstrain.solvers.projected import ProjectedGradient
from jconstrain.solvers.sqp import SQP

__all__ = ["AbstractSolver", "AugmentedLagrangian", "Penalty", "ProjectedGradient", "SQP"]
