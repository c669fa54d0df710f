"""The solvers behind `jc.solve`, one module a method."""

from jconstrain.solvers.base import AbstractSolver
from jconstrain.solvers.penalty import Penalty

__all__ = ["AbstractSolver", "Penalty"]
