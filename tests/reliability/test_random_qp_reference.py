"""The exact reference of the property tests (`random_qp.reference`) is itself right.

A wrong reference fails correct solvers: on member 5 of seed 1320 the active-set
enumeration once accepted a point with f = -2.837 (the optimum is -3.356), because the
KKT matrix of a set holding both bounds of one variable is singular and LAPACK returned
a garbage point with huge multipliers instead of raising. These tests pin that case,
check that `certify` rejects a wrong point, and certify the references of a few hundred
seeds against SciPy.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from reliability import random_qp as R


def _objective(qp: R.QP, x: np.ndarray) -> float:
    return float(0.5 * x @ qp.Q @ x + qp.c @ x)


def test_seed_1320_member_5_is_the_optimum():
    qp = R.random_qps(1320, 8).member(5)
    ref = R.reference(qp)
    other = R.scipy_solution(qp)
    assert R.max_violation(qp, other) <= 1e-8
    np.testing.assert_allclose(ref.x, other, rtol=0, atol=1e-6)
    assert _objective(qp, ref.x) <= _objective(qp, other) + 1e-10


def _wrong_kkt_points(qp: R.QP):
    """Every feasible point of an equality QP over an independent set S of active rows
    that is not the optimum, with the multipliers that solve its KKT system."""
    n = qp.Q.shape[0]
    G, h, kinds = R._inequality_rows(qp, box_only=False)
    f_star = _objective(qp, R.reference(qp).x)
    for size in range(1, n):
        for S in itertools.combinations(range(len(kinds)), size):
            A = np.vstack([qp.A_eq, G[list(S)]])
            if np.linalg.matrix_rank(A) < A.shape[0]:
                continue
            K = np.block([[qp.Q, A.T], [A, np.zeros((len(A), len(A)))]])
            sol = np.linalg.solve(K, np.concatenate([-qp.c, qp.b_eq, h[list(S)]]))
            x, mu = sol[:n], sol[n:]
            if R.max_violation(qp, x) > 1e-12 or _objective(qp, x) <= f_star + 1e-6:
                continue
            ineq, lower, upper = np.zeros(3), np.zeros(n), np.zeros(n)
            for k, value in zip(S, mu[1:]):
                kind, i = kinds[k]
                {"ineq": ineq, "lower": lower, "upper": upper}[kind][i] = value
            yield R.Reference(x=x, eq=mu[:1], ineq=ineq, lower=lower, upper=upper)


def test_certify_rejects_every_wrong_kkt_point():
    """Each feasible KKT point of a wrong active set of seed 1320's member 5 is rejected,
    with its own multipliers (one has the wrong sign) and with their signs flipped to
    pass the sign test (then it is not stationary)."""
    qp = R.random_qps(1320, 8).member(5)
    wrong = list(_wrong_kkt_points(qp))
    assert len(wrong) >= 3
    for ref in wrong:
        with pytest.raises(AssertionError):
            R.certify(qp, ref)
        flipped = R.Reference(x=ref.x, eq=ref.eq, ineq=np.abs(ref.ineq), lower=np.abs(ref.lower), upper=np.abs(ref.upper))
        with pytest.raises(AssertionError):
            R.certify(qp, flipped)


@pytest.mark.parametrize("box_only", [False, True])
def test_references_of_300_seeds_are_certified(box_only):
    """`reference` certifies every answer (strict KKT, SLSQP finds nothing better) and
    raises otherwise: 2400 QPs each way, seeds 0..299 (the property tests draw theirs
    at random from 0..2^31-1)."""
    for seed in range(300):
        qps = R.random_qps(seed, 8, box_only=box_only)
        for i in range(8):
            R.reference(qps.member(i), box_only=box_only)
