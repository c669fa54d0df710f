"""The verbose=True iteration table: printed from compiled code (jit, vmap)."""

import re

import jax
import jax.numpy as jnp
import numpy as np

import jconstrain as jc
from jconstrain import _printer as printer
from problems import HS28, HS71, disc_projection_problem

ROW = re.compile(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$")


def _read(capsys):
    jax.effects_barrier()
    return capsys.readouterr().out.splitlines()


def test_verbose_under_jit_prints_table_and_summary(capsys):
    tp = HS71
    sol = jax.jit(lambda x0: jc.solve(tp.problem, x0, jc.Penalty(), verbose=True))(tp.x0)
    jax.block_until_ready(sol)
    lines = _read(capsys)
    assert lines[0] == "jconstrain Penalty"
    assert lines[1].split() == ["iter", "f", "violation", "stationarity", "step", "penalty"]
    rows = [ROW.match(line) for line in lines[2:-1]]
    assert all(rows), lines
    k = int(sol.stats.iterations)
    assert [int(r.group(1)) for r in rows] == list(range(k + 1))
    # Row 0 is x0, the last row is sol.x.
    np.testing.assert_allclose(float(rows[0].group(2)), float(tp.problem.objective(tp.x0, None)), rtol=1e-6)
    np.testing.assert_allclose(float(rows[-1].group(2)), float(sol.f), rtol=1e-6)
    np.testing.assert_allclose(float(rows[-1].group(3)), float(sol.stats.violation), rtol=1e-3)
    summary = lines[-1]
    assert summary.startswith("CONVERGED: converged: stationary and feasible")
    assert f"{k} iterations" in summary
    assert f"f = {float(sol.f):.8e}" in summary


def test_summary_names_other_statuses(capsys):
    jc.solve(HS71.problem, HS71.x0, jc.Penalty(), max_steps=1, verbose=True)
    lines = _read(capsys)
    assert lines[-1].startswith("MAX_STEPS: stopped: the maximum number of steps was reached; 1 iterations")
    assert len(lines) == 2 + 2 + 1  # header, 2 rows (iterations 0 and 1), summary


def test_quiet_by_default(capsys):
    sol = jc.solve(HS28.problem, HS28.x0, jc.Penalty())
    jax.block_until_ready(sol)
    assert _read(capsys) == []


MEMBER_ROW = re.compile(r"^#(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$")


def test_vmap_each_member_prints_its_own_rows(capsys):
    """Under vmap each member prints its rows while running, labelled `#i`, then its
    summary line (in member order) and a count of the statuses."""
    problem = disc_projection_problem()
    centres = jnp.array([[0.1, 0.2], [3.0, 0.0]])  # inside (1 step), outside (several)
    sols = jax.jit(jax.vmap(lambda c: jc.solve(problem, jnp.zeros(2), jc.Penalty(), c, verbose=True)))(centres)
    jax.block_until_ready(sols)
    lines = _read(capsys)
    rows = [MEMBER_ROW.match(line) for line in lines if MEMBER_ROW.match(line)]
    summaries = [line for line in lines if re.match(r"^#\d+ CONVERGED:", line)]
    iterations = [int(i) for i in sols.stats.iterations]
    assert iterations[0] < iterations[1]
    assert len(rows) == sum(k + 1 for k in iterations)  # finished members stay quiet
    assert sorted((int(r.group(1)), int(r.group(2))) for r in rows) == sorted(
        (m, i) for m, k in enumerate(iterations) for i in range(k + 1)
    )
    assert [s.split()[0] for s in summaries] == ["#0", "#1"]
    assert [f"{k} iterations" in s for s, k in zip(summaries, iterations)] == [True, True]
    assert lines[-1] == "2 solves: 2 CONVERGED"


def test_printer_functions_directly(capsys):
    printer.header("Thing", "mu")
    printer.row(jnp.asarray(3), 1.5, 2e-3, 4e-7, 0.25, 10.0)
    printer.row(jnp.asarray(4), 1.5, 2e-3, 4e-7, 0.25, 10.0, active=False)  # not printed
    printer.summary(jnp.asarray(jc.Status.INFEASIBLE, jnp.int32), jnp.asarray(7), -1.25, 0.5)
    printer.summary(jnp.asarray(42, jnp.int32), jnp.asarray(1), 0.0, 0.0)
    lines = _read(capsys)
    assert lines[0] == "jconstrain Thing"
    assert lines[1].split()[-1] == "mu"
    assert lines[2].split() == ["3", "1.500000e+00", "2.000e-03", "4.000e-07", "2.500e-01", "1.000e+01"]
    assert lines[3] == (
        "INFEASIBLE: infeasible: stationary for the violation while infeasible; "
        "7 iterations, f = -1.25000000e+00, violation = 5.00e-01"
    )
    assert lines[4].startswith("UNKNOWN(42): UNKNOWN(42); 1 iterations")
    assert len(lines) == 5


def test_every_status_is_named_in_words(capsys):
    for status in jc.Status:
        printer.summary(jnp.asarray(status, jnp.int32), jnp.asarray(0), 0.0, 0.0)
    lines = _read(capsys)
    assert len(lines) == len(jc.Status)
    for status, line in zip(jc.Status, lines):
        assert status.description
        assert line.startswith(f"{status.name}: {status.description}; 0 iterations")
