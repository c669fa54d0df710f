"""What an eager `jc.solve` costs a notebook user: the first call, which traces and
compiles, and repeated calls with the same problem, which reuse the compilation.

    python benchmarks/eager_calls.py

Problem: the README example (4 variables, one equality, one inequality, bounds), args
as a 0-d array. For each solver: the first eager call, the second call with the same
inputs, and a third with another start, other args values and another tolerance
(all of the same shapes); each timed to `block_until_ready`. Before `solve` cached its
compilation, every eager call cost as much as the first. Results in
benchmarks/results/eager_calls.json.
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import jconstrain as jc  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results", "eager_calls.json")
SOLVERS = {
    "SQP": lambda tol: jc.SQP(opt_tol=tol),
    "AugmentedLagrangian": lambda tol: jc.AugmentedLagrangian(opt_tol=tol),
    "Penalty": lambda tol: jc.Penalty(opt_tol=tol),
}


def readme_problem() -> jc.Problem:
    return jc.Problem(
        objective=lambda x, a: x["w"][0] * x["w"][3] * jnp.sum(x["w"][:3]) + x["w"][2],
        eq=lambda x, a: jnp.sum(x["w"] ** 2) - a,
        ineq=lambda x, a: 25.0 - jnp.prod(x["w"]),
        bounds=(1.0, 5.0),
    )


def timed(fn) -> tuple[float, jc.Solution]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def main() -> None:
    problem = readme_problem()
    x0 = {"w": jnp.array([1.0, 5.0, 5.0, 1.0])}
    x0_other = {"w": jnp.array([1.5, 4.0, 4.0, 1.5])}
    rows = []
    print(f"{'solver':<22}{'first call':>12}{'same again':>12}{'other values':>14}  status")
    for name, make in SOLVERS.items():
        first, sol = timed(lambda: jc.solve(problem, x0, make(1e-6), args=jnp.asarray(40.0)))
        again, _ = timed(lambda: jc.solve(problem, x0, make(1e-6), args=jnp.asarray(40.0)))
        other, sol2 = timed(lambda: jc.solve(problem, x0_other, make(1e-7), args=jnp.asarray(41.0)))
        statuses = [jc.Status(int(s.status)).name for s in (sol, sol2)]
        print(f"{name:<22}{first:>11.2f}s{again:>11.4f}s{other:>13.4f}s  {'/'.join(statuses)}")
        rows.append(dict(solver=name, first=first, again=again, other=other, statuses=statuses, f=float(sol.f)))
    meta = dict(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} cores", jax=jax.__version__)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as fh:
        json.dump(dict(meta=meta, rows=rows), fh, indent=1)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
