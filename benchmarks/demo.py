"""jconstrain showcase: a few problems with known optima, solved by every solver there is.

    python benchmarks/demo.py        (or `make demo`)

Prints one row per (problem, solver): the status, the objective and its distance to
the known optimum f*, the max constraint violation, outer and inner iterations, and
the compile time and run time measured separately (the solve is jitted, lowered and
compiled first; the compiled call is then timed to `block_until_ready`).
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jconstrain as jc  # noqa: E402

# Every solver jconstrain may have; those not (yet) in the package are skipped.
SOLVER_NAMES = ("SQP", "AugmentedLagrangian", "Penalty", "ProjectedGradient")
PROJECTION_ONLY = ("ProjectedGradient",)  # handles bounds, not eq/ineq


@dataclass
class Showcase:
    name: str
    problem: jc.Problem
    x0: Any
    f_star: Any  # a float, or an array of per-member optima for a batch
    args: Any = None
    batch: bool = False  # vmap over args

    @property
    def bounds_only(self) -> bool:
        return self.problem.eq is None and self.problem.ineq is None


def hs71() -> Showcase:
    """HS71: min x1 x4 (x1+x2+x3) + x3, x1x2x3x4 >= 25, ||x||² = 40, 1 <= x <= 5."""
    return Showcase(
        "HS71",
        jc.Problem(
            objective=lambda x, a: x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2],
            eq=lambda x, a: jnp.sum(x**2) - 40.0,
            ineq=lambda x, a: 25.0 - jnp.prod(x),
            bounds=(1.0, 5.0),
        ),
        jnp.array([1.0, 5.0, 5.0, 1.0]),
        17.0140173,
    )


def rosen_suzuki() -> Showcase:
    """HS43 (Rosen-Suzuki): a convex quadratic under three quadratic inequalities."""

    def f(x, a):
        return x[0] ** 2 + x[1] ** 2 + 2 * x[2] ** 2 + x[3] ** 2 - 5 * x[0] - 5 * x[1] - 21 * x[2] + 7 * x[3]

    def g(x, a):
        return -jnp.stack(
            [
                8 - x[0] ** 2 - x[1] ** 2 - x[2] ** 2 - x[3] ** 2 - x[0] + x[1] - x[2] + x[3],
                10 - x[0] ** 2 - 2 * x[1] ** 2 - x[2] ** 2 - 2 * x[3] ** 2 + x[0] + x[3],
                5 - 2 * x[0] ** 2 - x[1] ** 2 - x[2] ** 2 - 2 * x[0] + x[1] + x[3],
            ]
        )

    return Showcase("Rosen-Suzuki", jc.Problem(objective=f, ineq=g), jnp.zeros(4), -44.0)


def dict_problem() -> Showcase:
    """x = {"a": (3,), "B": (2, 2)}; an eq returning a dict, an ineq returning a tuple."""
    p, q = jnp.full(3, 0.6), jnp.ones((2, 2))
    return Showcase(
        "dict x",
        jc.Problem(
            objective=lambda x, a: jnp.sum((x["a"] - p) ** 2) + jnp.sum((x["B"] - q) ** 2),
            eq=lambda x, a: {"sum": jnp.sum(x["a"]) - 1.0},
            ineq=lambda x, a: (x["B"] - 0.25, x["a"][:1] - 0.2),
        ),
        {"a": jnp.zeros(3), "B": jnp.zeros((2, 2))},
        2.49,  # a* = (0.2, 0.4, 0.4), B* = 0.25
    )


def hs5() -> Showcase:
    """HS5: a nonconvex objective on a box (bounds only)."""
    return Showcase(
        "HS5 (box)",
        jc.Problem(
            objective=lambda x, a: jnp.sin(x[0] + x[1]) + (x[0] - x[1]) ** 2 - 1.5 * x[0] + 2.5 * x[1] + 1,
            bounds=(jnp.array([-1.5, -3.0]), jnp.array([4.0, 3.0])),
        ),
        jnp.zeros(2),
        -math.sqrt(3) / 2 - math.pi / 3,
    )


def disc_batch() -> Showcase:
    """64 projections of points c onto the unit disc, vmapped over args = c."""
    c = 1.6 * jax.random.normal(jax.random.PRNGKey(0), (64, 2))
    f_star = np.maximum(np.linalg.norm(np.asarray(c), axis=1) - 1.0, 0.0) ** 2
    return Showcase(
        "disc x64 (vmap)",
        jc.Problem(objective=lambda x, c: jnp.sum((x - c) ** 2), ineq=lambda x, c: jnp.sum(x**2) - 1.0),
        jnp.zeros(2),
        f_star,
        args=c,
        batch=True,
    )


def compile_and_run(show: Showcase, solver: jc.AbstractSolver):
    if show.batch:
        fn = jax.vmap(lambda c: jc.solve(show.problem, show.x0, solver, c))
        operand = show.args
    else:
        fn = lambda x0: jc.solve(show.problem, x0, solver, show.args)
        operand = show.x0
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(operand).compile()
    t1 = time.perf_counter()
    sol = jax.block_until_ready(compiled(operand))
    t2 = time.perf_counter()
    return sol, t1 - t0, t2 - t1


def describe(show: Showcase, sol: jc.Solution) -> list[str]:
    status = np.atleast_1d(np.asarray(sol.status))
    if show.batch:
        counts = {jc.Status(int(s)).name: int(np.sum(status == s)) for s in np.unique(status)}
        words = ", ".join(f"{n}/{status.size} {name}" for name, n in counts.items())
    else:
        words = jc.Status(int(status[0])).name
    f = np.asarray(sol.f)
    err = np.max(np.abs(f - np.asarray(show.f_star)))
    maxi = lambda a: int(np.max(np.asarray(a)))
    prefix = "max " if show.batch else ""
    return [
        words,
        f"{np.mean(f):.8g}" + (" (mean)" if show.batch else ""),
        f"{prefix}{err:.1e}",
        f"{prefix}{float(np.max(np.asarray(sol.stats.violation))):.1e}",
        f"{prefix}{maxi(sol.stats.iterations)}",
        f"{prefix}{maxi(sol.stats.inner_iterations)}",
    ]


def main() -> int:
    solvers = [(name, getattr(jc, name)) for name in SOLVER_NAMES if getattr(jc, name, None) is not None]
    showcases = [hs71(), rosen_suzuki(), dict_problem(), hs5(), disc_batch()]
    header = ["problem", "solver", "status", "objective", "|f - f*|", "violation", "iters", "inner", "compile s", "run s"]
    widths = [16, 20, 20, 22, 12, 12, 9, 10, 10, 9]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    print(f"jconstrain {jc.__version__}, jax {jax.__version__} on {jax.devices()[0].platform}; "
          f"solvers: {', '.join(name for name, _ in solvers)}")
    print(line(header))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    failures = 0
    for show in showcases:
        for name, cls in solvers:
            if name in PROJECTION_ONLY and not show.bounds_only:
                continue
            try:
                solver = cls()
            except TypeError as e:  # a solver that needs arguments the demo does not know
                print(line([show.name, name, f"skipped ({e})"]))
                continue
            try:
                sol, t_compile, t_run = compile_and_run(show, solver)
            except Exception as e:  # noqa: BLE001 - report and go on with the other rows
                failures += 1
                print(line([show.name, name, f"ERROR {type(e).__name__}: {e}"]))
                traceback.print_exc(file=sys.stderr)
                continue
            print(line([show.name, name, *describe(show, sol), f"{t_compile:.2f}", f"{t_run:.4f}"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
