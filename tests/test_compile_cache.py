"""`jc.solve` caches its compilation: a second eager call with the same problem does not
trace the user's functions again (counted with a Python side effect in the objective,
which runs only while JAX traces it)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc

SOLVERS = {
    "SQP": lambda **kw: jc.SQP(**kw),
    "AugmentedLagrangian": lambda **kw: jc.AugmentedLagrangian(**kw),
    "Penalty": lambda **kw: jc.Penalty(**kw),
    "ProjectedGradient": lambda **kw: jc.ProjectedGradient(projection=_SIMPLEX, **kw),
}
_SIMPLEX = jc.projections.simplex()


def _counted_problem(name: str):
    """min ||x - a||² s.t. sum(x) <= 1 (ProjectedGradient: x on the unit simplex); the
    list grows each time JAX traces the objective. Solution: the projection of a."""
    traces = []

    def objective(x, a):
        traces.append(None)
        return jnp.sum((x - a) ** 2)

    if name == "ProjectedGradient":
        return jc.Problem(objective), traces
    return jc.Problem(objective, ineq=lambda x, a: jnp.sum(x) - 1.0), traces


@pytest.mark.parametrize("name", list(SOLVERS))
def test_second_eager_solve_traces_nothing(name):
    problem, traces = _counted_problem(name)
    a = jnp.array([1.0, 0.5, -0.2])
    first = jc.solve(problem, jnp.zeros(3), SOLVERS[name](), args=a)
    traced_once = len(traces)
    assert traced_once >= 1
    # A new but equal solver, another start and other args values of the same shapes,
    # and another tolerance value: the compiled solve is reused.
    second = jc.solve(problem, jnp.full(3, 0.1), SOLVERS[name](opt_tol=1e-7), args=a + 0.5)
    assert len(traces) == traced_once
    for sol, centre in ((first, a), (second, a + 0.5)):
        assert int(sol.status) == jc.Status.CONVERGED, jc.Status(int(sol.status)).name
        expected = np.asarray(jc.projections.simplex()(centre))
        if name != "ProjectedGradient":  # the half-space sum(x) <= 1, not the simplex
            expected = np.asarray(centre) - max(0.0, (float(jnp.sum(centre)) - 1.0) / 3.0)
        np.testing.assert_allclose(np.asarray(sol.x), expected, atol=1e-5)


def test_new_shapes_or_max_steps_compile_again():
    """The cache is keyed on shapes and static options: a longer x0 or another max_steps
    traces again (and still solves)."""
    problem, traces = _counted_problem("SQP")
    jc.solve(problem, jnp.zeros(3), jc.SQP(), args=jnp.ones(3))
    after_first = len(traces)
    jc.solve(problem, jnp.zeros(4), jc.SQP(), args=jnp.ones(4))
    after_shape = len(traces)
    assert after_shape > after_first
    sol = jc.solve(problem, jnp.zeros(4), jc.SQP(), args=jnp.ones(4), max_steps=7)
    assert len(traces) > after_shape
    assert int(sol.stats.iterations) <= 7
