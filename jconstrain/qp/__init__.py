"""A jitted, vmap-able dense QP solver: `jc.qp.solve`, `QPSolution`, `QPStatus`.

    minimise 1/2 x^T Q x + c^T x  s.t.  A_eq x = b_eq,  A_ineq x <= b_ineq,  lower <= x <= upper

Ruiz equilibration (`_scaling`), a homogeneous self-dual interior-point method with
Mehrotra predictor-corrector steps (`_ipm`, its linear algebra in `_kkt`), and polishing
on the active set (`_polish`); each module's docstring states its mathematics.
"""

from jconstrain.qp._api import default_tol, solve
from jconstrain.qp._status import QPSolution, QPStatus

__all__ = ["QPSolution", "QPStatus", "default_tol", "solve"]
