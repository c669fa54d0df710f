"""Property tests (hypothesis) on random strictly convex QPs with feasible constraints.

Each hypothesis example draws a seed; the seed makes a batch of BATCH QPs of fixed shapes
(`random_qp.py`: n = 4, one equality, three inequalities, random finite/infinite bounds,
a random start), solved by one jitted, vmapped call per solver, so every example reuses
the same compiled function. Checked against an exact active-set reference (NumPy):

- every applicable solver: CONVERGED, x within 1e-6 of the reference, KKT residual with
  the reported multipliers <= 1e-6 (relative to max(1, ||∇f||_∞)), multipliers of
  inequalities and bounds >= 0 and equal to the reference's to 1e-6·max(1, |ref|);
  ProjectedGradient on the bound-only QPs;
- x as a flat vector or as a dict of arrays (constraint outputs as a dict and a tuple):
  the same answer;
- float32 (x64 off): every floating leaf of the Solution float32, violation <= 1e-4,
  no NaN.

Tolerances: jc.SQP runs with its defaults. The first-order methods run with violation
tolerances below the 1e-6 asked of x, since the default viol_tol = 1e-6 lets x sit
~1e-6/σ_min(A) from the solution (measured up to 4.7e-6 with ALM defaults):
AugmentedLagrangian(viol_tol=1e-9, opt_tol=1e-9) and Penalty(viol_tol=1e-8) (Penalty's
default opt_tol = 1e-6: its reachable stationarity is limited by the conditioning of
P_ρ, ρ ~ |λ|/viol_tol; with viol_tol = 1e-9 and opt_tol = 1e-9 it stalled on most QPs,
with opt_tol = 1e-7 on some).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jconstrain as jc
from reliability import random_qp as R

BATCH = 8
# The loaded profile (tests/conftest.py) sets the draw: 4 derandomised examples a test in
# `make test`, 50 random ones with HYPOTHESIS_PROFILE=explore.
SETTINGS = settings()
# float32 SQP runs take up to its 1000 iterations on some draws: half as many examples there.
FLOAT32_SETTINGS = settings(SETTINGS, max_examples=max(1, SETTINGS.max_examples // 2))
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)

SOLVERS = {
    "SQP": jc.SQP(),
    "AugmentedLagrangian": jc.AugmentedLagrangian(viol_tol=1e-9, opt_tol=1e-9),
    "Penalty": jc.Penalty(viol_tol=1e-8),
}
# How close the flat and dict forms' answers must be (see the test).
SAME_X = {"SQP": 1e-10, "AugmentedLagrangian": 1e-8, "Penalty": 1e-6}
_COMPILED: dict = {}


def _batch_solve(name: str, kind: str = "flat"):
    """One jitted, vmapped solve per (solver, problem form), reused by every example."""
    key = (name, kind)
    if key not in _COMPILED:
        if kind == "box":
            _COMPILED[key] = R.solver_batch(jc.ProjectedGradient(), R.box_problem)
        else:
            problem = R.dict_problem if kind == "dict" else R.flat_problem
            _COMPILED[key] = R.solver_batch(SOLVERS[name], problem, dict_x=kind == "dict")
    return _COMPILED[key]


def _run(name: str, qps: R.QP, kind: str = "flat", dtype=jnp.float64) -> jc.Solution:
    inputs = (qps.data(dtype), jnp.asarray(qps.lower, dtype), jnp.asarray(qps.upper, dtype), jnp.asarray(qps.x0, dtype))
    return jax.block_until_ready(_batch_solve(name, kind)(*inputs))


def _member(sol: jc.Solution, i: int):
    return jax.tree_util.tree_map(lambda a: np.asarray(a[i], np.float64), (sol.x, sol.multipliers))


def _check_against_reference(qps: R.QP, sol: jc.Solution, box_only: bool = False) -> None:
    for i in range(BATCH):
        qp = qps.member(i)
        ref = R.reference(qp, box_only=box_only)
        x, m = _member(sol, i)
        where = f"member {i}: status {jc.Status(int(sol.status[i])).name}, x {x}, reference {ref.x}"
        assert int(sol.status[i]) == jc.Status.CONVERGED, where
        np.testing.assert_allclose(x, ref.x, rtol=0, atol=1e-6, err_msg=where)
        eq = None if box_only else m.eq
        ineq = None if box_only else m.ineq
        assert R.kkt_residual(qp, x, eq, ineq, m.lower, m.upper, box_only) <= 1e-6, where
        pairs = [(m.lower, ref.lower), (m.upper, ref.upper)]
        if not box_only:
            pairs += [(m.ineq, ref.ineq), (m.eq, ref.eq)]
        for k, (got, want) in enumerate(pairs):
            if k < len(pairs) - (0 if box_only else 1):  # inequality and bound multipliers
                assert np.all(got >= 0), (where, got)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * max(1.0, np.max(np.abs(want))), err_msg=where)


@pytest.mark.parametrize("name", list(SOLVERS))
@SETTINGS
@given(seed=SEEDS)
def test_random_convex_qp_matches_reference(name, seed):
    qps = R.random_qps(seed, BATCH)
    _check_against_reference(qps, _run(name, qps))


@SETTINGS
@given(seed=SEEDS)
def test_random_box_qp_projected_gradient_matches_reference(seed):
    qps = R.random_qps(seed, BATCH, box_only=True)
    _check_against_reference(qps, _run("ProjectedGradient", qps, kind="box"), box_only=True)


@pytest.mark.parametrize("name", list(SOLVERS))
@SETTINGS
@given(seed=SEEDS)
def test_flat_and_dict_forms_give_the_same_answer(name, seed):
    """The dict form's x (raveled in key order u, v) equals the flat x, with the same
    statuses, to the accuracy each solver runs at here (`SAME_X`): the two forms compile
    to different programs whose rounding differs, and a solver's iterates amplify that
    up to its tolerances (measured: AugmentedLagrangian 4e-10 at tolerances 1e-9;
    Penalty 4.8e-8, its subproblems having ρ ~ 1e8); its multipliers keep the output structure (eq a dict, ineq a tuple of
    (2,) and (1,)) and equal the flat ones to the 1e-6 (relative) asked of them against
    the reference (Penalty's multipliers ρ c amplify last-bit differences of x by
    ρ ~ 1e8)."""
    qps = R.random_qps(seed, BATCH)
    flat, tree = _run(name, qps), _run(name, qps, kind="dict")
    np.testing.assert_array_equal(np.asarray(flat.status), np.asarray(tree.status))
    x_tree = np.asarray(jax.vmap(R.from_dict)(tree.x))
    np.testing.assert_allclose(x_tree, np.asarray(flat.x), rtol=0, atol=SAME_X[name])
    assert set(tree.multipliers.eq) == {"e"} and tree.multipliers.eq["e"].shape == (BATCH, 1)
    assert [a.shape for a in tree.multipliers.ineq] == [(BATCH, 2), (BATCH, 1)]
    ineq = np.concatenate([np.asarray(a) for a in tree.multipliers.ineq], axis=1)
    scale = max(1.0, float(np.max(np.abs(np.asarray(flat.multipliers.ineq)))))
    np.testing.assert_allclose(ineq, np.asarray(flat.multipliers.ineq), rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("name", list(SOLVERS) + ["ProjectedGradient"])
@FLOAT32_SETTINGS
@given(seed=SEEDS)
def test_float32_keeps_float32_reaches_1e_4_and_never_nan(name, seed):
    """With x64 off (deep-learning use): every floating leaf of the Solution (its state
    included) is float32, the violation recomputed in float64 at x is <= 1e-4, and no
    NaN anywhere (x, f, multipliers, stats)."""
    box_only = name == "ProjectedGradient"
    qps = R.random_qps(seed, BATCH, box_only=box_only)
    with jax.enable_x64(False):
        sol = _run(name, qps, kind="box" if box_only else "flat", dtype=jnp.float32)
    floats = [leaf for leaf in jax.tree_util.tree_leaves(sol) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    assert floats and {leaf.dtype for leaf in floats} == {jnp.dtype(jnp.float32)}
    for leaf in jax.tree_util.tree_leaves((sol.x, sol.f, sol.multipliers, sol.stats)):
        assert not np.any(np.isnan(np.asarray(leaf)))
    for i in range(BATCH):
        assert R.max_violation(qps.member(i), np.asarray(sol.x[i]), box_only) <= 1e-4
