"""Smoke test of benchmarks/cutest.py: its own problem loading, solving and scoring.

jc.SQP must solve HS21, HS35 and HS71 of sif2jax by the benchmark's criterion
(max violation incl. bounds <= 1e-6, f <= f_ref + 1e-5 max(1, |f_ref|), evaluated at
the returned point). Compiling SQP takes several seconds per problem: marked slow.
"""

import argparse
import importlib.util
import os
import sys

import numpy as np
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sif2jax") is None, reason="sif2jax not installed")


@pytest.fixture(scope="module")
def cutest():
    sys.path.insert(0, BENCHMARKS)
    try:
        import _hs  # noqa: F401  (loaded first: cutest imports it by this name)
        import cutest
    finally:
        sys.path.remove(BENCHMARKS)
    return cutest


def test_problem_set(cutest):
    """The benchmark's set: 97 HS problems, conventions as the anchors (c(x) <= 0)."""
    _hs = cutest._hs
    problems = _hs.load_problems()
    assert len(problems) == 97
    assert len({p.name for p in problems}) == 97
    by_name = {p.name: p for p in problems}
    hs71 = by_name["HS71"]
    assert (hs71.n, hs71.meq, hs71.min) == (4, 1, 1)
    np.testing.assert_allclose(hs71.lower, 1.0)
    np.testing.assert_allclose(hs71.upper, 5.0)
    x = np.array([1.0, 4.742999, 3.821150, 1.379408])  # the book's optimum
    # sif2jax: x1 x2 x3 x4 - 25 >= 0, here negated to 25 - x1 x2 x3 x4 <= 0
    np.testing.assert_allclose(hs71.ineq(x), [25.0 - np.prod(x)], rtol=1e-12)
    ev = _hs.Evaluator(hs71)
    scored = _hs.score(ev, x)
    assert scored["viol"] < 1e-4 and abs(scored["f"] - 17.0140173) < 1e-5
    # the criterion itself
    assert _hs.is_solved(1.0, 1e-7, 1.0) and not _hs.is_solved(1.0, 2e-6, 1.0)
    assert _hs.is_solved(1.0 + 9e-6, 0.0, 1.0) and not _hs.is_solved(1.0 + 2e-5, 0.0, 1.0)
    assert not _hs.is_solved(float("nan"), 0.0, 1.0)
    x_bad = np.full(4, np.nan)
    bad = _hs.score(ev, x_bad)
    assert bad["x_nonfinite"] and not bad["solved"]


@pytest.mark.slow
def test_sqp_solves_three_hs_problems(cutest):
    _hs = cutest._hs
    problems = _hs.load_problems(["HS21", "HS35", "HS71"])
    assert [p.name for p in problems] == ["HS21", "HS35", "HS71"]
    opts = argparse.Namespace(overrides={}, repeats=1, trace=False, verbose=False)
    for problem in problems:
        ev = _hs.Evaluator(problem)
        ev.warm_up()
        rec = cutest.run_one(problem, ev, "sqp", opts)
        assert rec["error"] is None, rec["error"]
        assert rec["solved"], cutest.problem_line("sqp", rec)
        assert not str(rec["status"]).startswith("EXCEPTION"), rec["status"]
        assert rec["compile_time"] > 0 and rec["time"] > 0 and rec["iters"] > 0
