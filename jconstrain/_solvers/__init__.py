"""The solvers behind `jc.solve`, one module a method, and the protocol they implement."""

from jconstrain._solvers.alm import AugmentedLagrangian
from jconstrain._solvers.base import AbstractSolver, Progress, Report
from jconstrain._solvers.penalty import Penalty
from jconstrain._solvers.projected import ProjectedGradient
from jconstrain._solvers.sqp import SQP

__all__ = ["AbstractSolver", "AugmentedLagrangian", "Penalty", "Progress", "ProjectedGradient", "Report", "SQP"]
