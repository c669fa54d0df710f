"""Batched solves: one `jax.jit(jax.vmap(jc.solve))` against a Python loop of SciPy SLSQP.

    python benchmarks/batch.py                          # sizes 1,10,100,1000,10000
    python benchmarks/batch.py --sizes 10,100 --solvers alm --out /tmp/batch
    python benchmarks/batch.py --solvers alm,sqp --max-size sqp=100,alm=10000
    python benchmarks/batch.py --report-only            # table and plot from the saved JSON
    python benchmarks/batch.py --host-devices 2         # also sharded over 2 CPU devices

The problem family is HS71 with varied constants and start points (instance i of a
fixed seed is the same at every batch size; a batch of size B is instances 0..B-1):

    minimise  x1 x4 (x1 + x2 + x3) + c x3
    s.t.      x1² + x2² + x3² + x4² = b,   x1 x2 x3 x4 >= a,   1 <= x <= 5,
    a ~ U(20, 30), b ~ U(36, 44), c ~ U(0.5, 1.5), x0 ~ U(1, 5)^4   (HS71: a=25, b=40, c=1).

jconstrain (`--solvers`: alm = jc.AugmentedLagrangian(), alm-newton =
jc.AugmentedLagrangian(optimizer=jc.newton()) (Newton inner solves with the exact
Hessian instead of L-BFGS, for small n), sqp = jc.SQP(), penalty = jc.Penalty();
otherwise default settings, float64): `jax.jit(jax.vmap(solve))` is lowered and
compiled for each batch size (reported as compile), called once to warm up, and the
next calls are timed with block_until_ready (reported as run: best of `--repeats`, one
call only once a call takes over a second). `--max-size` caps the batch size per
solver (default sqp=100: under vmap every outer and inner loop of the batch runs as
long as its slowest member needs, which makes SQP's batches far slower than its single
solves; see the iteration statistics in the JSON).

SciPy SLSQP (maxiter 1000) runs in a Python loop on the same instances, with the same
JAX functions as callbacks: a jitted value-and-grad of the objective, jitted constraint
functions and jitted constraint Jacobians (instance constants passed as arguments, so
nothing recompiles). For comparison the jc solvers also run as a Python loop of one
compiled single solve (`jax.jit(solve)`, no vmap). Loops time each instance (best of
`--repeats` passes); a loop's time at size B is the sum over instances 0..B-1. Loops run
only the first `--slsqp-max` instances (default 1000): larger sizes are extrapolated
linearly from their mean time, marked * in the table (SLSQP's dashed in the plot).

With `--host-devices D` (D > 1) the CPU is split into D JAX devices (XLA_FLAGS
--xla_force_host_platform_device_count, set before jax is imported) and every jc batch
also runs through `jc.batch.sharded_vmap` (each device solves its slice in its own loops;
statuses checked equal to the one-device batch); the one-device batch still runs on device
0 alone. The SLSQP loop runs in one process, on one core, either way. jc.SQP is not run
sharded (`NOT_SHARDED`): jaxlib's batched LAPACK calls of its QPs deadlocked two CPU host
devices sharing one thread pool.

Scoring (both methods, at the returned x, with the same jitted functions): violation =
max over |eq|, max(ineq, 0) and the bounds; solved = violation <= 1e-6 and
f <= f_best + 1e-5 max(1, |f_best|), f_best the lowest f of a feasible point any method
returned for that instance (HS71 is nonconvex: a start may lead to a worse local
minimum). Where SLSQP did not run, f_best comes from the jc solvers alone.

Outputs (to --out, default benchmarks/results): batch.json (every number, the machine,
its load average before and after) and batch.png (time against batch size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _host_devices(argv: list[str]) -> int:
    """--host-devices, read before jax is imported (XLA fixes the device count then)."""
    for i, arg in enumerate(argv):
        if arg == "--host-devices" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--host-devices="):
            return int(arg.split("=", 1)[1])
    return 1


if __name__ == "__main__" and _host_devices(sys.argv[1:]) > 1:
    flag = f"--xla_force_host_platform_device_count={_host_devices(sys.argv[1:])}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jconstrain as jc  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "results")
DEFAULT_SIZES = "1,10,100,1000,10000"
JC_SOLVERS = {
    "alm": lambda: jc.AugmentedLagrangian(),
    "alm-newton": lambda: jc.AugmentedLagrangian(optimizer=jc.newton()),
    "sqp": lambda: jc.SQP(),
    "penalty": lambda: jc.Penalty(),
}
LABELS = {
    "alm": "jc.AugmentedLagrangian",
    "alm-newton": "jc.AugmentedLagrangian(optimizer=jc.newton())",
    "sqp": "jc.SQP",
    "penalty": "jc.Penalty",
    "slsqp": "SciPy SLSQP loop",
}
COLOURS = {"alm": "C6", "alm-newton": "C2", "sqp": "C3", "penalty": "C5", "slsqp": "C0"}
# jc.SQP's QPs call jaxlib's batched LAPACK kernels (LU), which wait on the CPU's shared
# intra-op thread pool: with 2 host devices each running such a call from a pool thread,
# the batch of 100 deadlocked (gdb: both pool threads in ParallelBatchMap's wait).
NOT_SHARDED = {"sqp"}
VIOL_TOL, F_TOL = 1e-6, 1e-5
LOWER, UPPER = 1.0, 5.0
SLSQP_MAXITER = 1000


# --------------------------------------------------------------------------- the family


def objective(x, p):
    a, b, c = p
    return x[0] * x[3] * (x[0] + x[1] + x[2]) + c * x[2]


def eq(x, p):
    return jnp.sum(x**2) - p[1]


def ineq(x, p):
    return p[0] - jnp.prod(x)  # <= 0


PROBLEM = jc.Problem(objective=objective, eq=eq, ineq=ineq, bounds=(LOWER, UPPER))


def instances(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x0, params) of instances 0..size-1: the same instance i for every size."""
    rng = np.random.default_rng(seed)
    params = np.empty((size, 3))
    x0 = np.empty((size, 4))
    for i in range(size):  # one draw per instance, in order, so prefixes agree across sizes
        params[i] = rng.uniform([20.0, 36.0, 0.5], [30.0, 44.0, 1.5])
        x0[i] = rng.uniform(LOWER, UPPER, 4)
    return x0, params


@jax.jit
@jax.vmap
def evaluate(x, p):
    """(f, max violation incl. bounds) at x, for scoring every method alike."""
    bound = jnp.maximum(jnp.max(LOWER - x), jnp.max(x - UPPER))
    viol = jnp.maximum(jnp.maximum(jnp.abs(eq(x, p)), jnp.maximum(ineq(x, p), 0.0)), jnp.maximum(bound, 0.0))
    return objective(x, p), viol


# --------------------------------------------------------------------------- runners


def _best_time(fn, args: tuple, repeats: int) -> tuple[float, Any]:
    """(best wall time of `repeats` calls, fewer once a call takes over a second; the last
    output)."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
        if best > 1.0:
            break
    return best, out


def run_jc(name: str, x0: np.ndarray, params: np.ndarray, repeats: int) -> dict[str, Any]:
    """The vmapped + jitted batch: compile time, and the best of `repeats` timed calls
    (fewer once a call takes over a second)."""
    solver = JC_SOLVERS[name]()
    fn = jax.jit(jax.vmap(lambda z, p: jc.solve(PROBLEM, z, solver, p)))
    t0 = time.perf_counter()
    compiled = fn.lower(x0, params).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(x0, params))  # warm-up call
    run_s, sol = _best_time(compiled, (x0, params), repeats)
    iterations = np.asarray(sol.stats.iterations)
    statuses = np.asarray(sol.status)
    sharded_run_s = None
    if jax.device_count() > 1 and name not in NOT_SHARDED:  # the batch split over every device
        sharded = jc.batch.sharded_vmap(lambda z, p: jc.solve(PROBLEM, z, solver, p))
        jax.block_until_ready(sharded(x0, params))  # compiles
        sharded_run_s, sharded_sol = _best_time(sharded, (x0, params), repeats)
        assert np.array_equal(np.asarray(sharded_sol.status), statuses), "sharded statuses differ"
    return {
        "compile_s": compile_s,
        "run_s": run_s,
        "sharded_run_s": sharded_run_s,
        "x": np.asarray(sol.x),
        "converged": statuses == jc.Status.CONVERGED,
        "status_counts": {jc.Status(int(s)).name: int(np.sum(statuses == s)) for s in np.unique(statuses)},
        "iterations": iterations,
    }


def run_jc_loop(name: str, x0: np.ndarray, params: np.ndarray, repeats: int) -> np.ndarray:
    """Per-instance wall times (best of `repeats`) of one jitted single solve called in a
    Python loop: the batch without vmap, for comparison."""
    solver = JC_SOLVERS[name]()
    single = jax.jit(lambda z, p: jc.solve(PROBLEM, z, solver, p)).lower(x0[0], params[0]).compile()
    x_dev, p_dev = jnp.asarray(x0), jnp.asarray(params)
    jax.block_until_ready(single(x_dev[0], p_dev[0]))
    times = np.full(len(x0), np.inf)
    for _ in range(repeats):
        for i in range(len(x0)):
            t0 = time.perf_counter()
            jax.block_until_ready(single(x_dev[i], p_dev[i]))
            times[i] = min(times[i], time.perf_counter() - t0)
    return times


def slsqp_callbacks():
    """Jitted JAX callbacks for SLSQP (its inequalities are fun(x) >= 0)."""
    value_and_grad = jax.jit(jax.value_and_grad(objective))
    eq_fn, eq_jac = jax.jit(eq), jax.jit(jax.jacrev(eq))
    ineq_fn, ineq_jac = jax.jit(lambda x, p: -ineq(x, p)), jax.jit(jax.jacrev(lambda x, p: -ineq(x, p)))

    def fun(x, p):
        value, grad = value_and_grad(x, p)
        return float(value), np.asarray(grad)

    def constraint(kind, fn, jac, p):
        value = lambda x: np.atleast_1d(np.asarray(fn(x, p)))
        return {"type": kind, "fun": value, "jac": lambda x: np.asarray(jac(x, p)).reshape(1, -1)}

    def constraints(p):
        return [constraint("eq", eq_fn, eq_jac, p), constraint("ineq", ineq_fn, ineq_jac, p)]

    return fun, constraints


def run_slsqp(x0: np.ndarray, params: np.ndarray, repeats: int) -> dict[str, Any]:
    """SLSQP on each instance in a Python loop; per-instance wall times (best of `repeats`)."""
    from scipy.optimize import Bounds, minimize

    fun, constraints = slsqp_callbacks()
    bounds = Bounds(np.full(4, LOWER), np.full(4, UPPER))
    p_dev = jnp.asarray(params)
    fun(x0[0], p_dev[0])  # compile the callbacks before timing
    for c in constraints(p_dev[0]):
        c["fun"](x0[0]), c["jac"](x0[0])
    xs, times, success = np.empty_like(x0), np.full(len(x0), np.inf), np.empty(len(x0), bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):
            for i in range(len(x0)):
                t0 = time.perf_counter()
                p = p_dev[i]
                res = minimize(fun, x0[i], args=(p,), jac=True, method="SLSQP", bounds=bounds,
                               constraints=constraints(p), options={"maxiter": SLSQP_MAXITER})  # fmt: skip
                times[i] = min(times[i], time.perf_counter() - t0)
                xs[i] = res.x
                success[i] = res.success
    return {"x": xs, "times": times, "success": success}


# --------------------------------------------------------------------------- scoring and reports


def score(xs: dict[str, np.ndarray], params: np.ndarray) -> dict[str, np.ndarray]:
    """solved[method][i] against f_best[i] = the best feasible f any method reached on i."""
    fv = {}
    for m, x in xs.items():
        fv[m] = tuple(np.asarray(a) for a in evaluate(jnp.asarray(x), jnp.asarray(params[: len(x)])))
    size = max(len(x) for x in xs.values())
    f_best = np.full(size, np.inf)
    for f, v in fv.values():
        feasible_f = np.where(v <= VIOL_TOL, f, np.inf)
        f_best[: len(f)] = np.minimum(f_best[: len(f)], feasible_f)
    out = {}
    for m, (f, v) in fv.items():
        ref = f_best[: len(f)]
        out[m] = (v <= VIOL_TOL) & (f <= ref + F_TOL * np.maximum(1.0, np.abs(ref)))
    return out


def member_utilisation(iterations: np.ndarray) -> float:
    """Σ iterations_i / (B · max iterations): the share of the batch's member-iterations
    that did useful work (the rest carry finished members while the slowest continue)."""
    top = int(iterations.max()) if iterations.size else 0
    return float(iterations.sum() / (iterations.size * top)) if top > 0 else 1.0


def print_table(summary: dict) -> None:
    rows = summary["results"]
    jc_names = [n for n in summary["solvers"] if n != "slsqp"]
    m = summary["machine"]
    print()
    print(f"HS71 family, float64, JAX {m['jax']} on {m['jax_devices']}; {m['cpus']} CPUs, "
          f"load average {m['load_before'][0]:.1f} before / {m['load_after'][0]:.1f} after; best of {summary['repeats']}")  # fmt: skip
    mark = lambda extrapolated: "*" if extrapolated else ""
    for name in jc_names:
        print(f"\n{LABELS[name]}: vmapped + jitted batch vs {LABELS['slsqp']} (* = extrapolated from "
              f"{summary['slsqp_instances_run']} instances)\n")  # fmt: skip
        devices = m.get("host_devices", 1)
        sharded = devices > 1
        extra_head = f" jc sharded over {devices} devices | SLSQP / jc sharded |" if sharded else ""
        print("| batch | jc vmap run | jc compile | jc loop of jitted solves | SLSQP loop | SLSQP / jc vmap |"
              f"{extra_head} solved jc | solved SLSQP | jc iterations min/median/max |")  # fmt: skip
        print("|---" * (11 if sharded else 9) + "|")
        for size in summary["sizes"]:
            j, sl = rows[str(size)].get(name), rows[str(size)]["slsqp"]
            if j is None:
                continue
            it = j["iterations"]
            shard_s = j.get("sharded_run_s")
            extra = (f" {shard_s:.3g} s | {sl['time_s'] / shard_s:.3g}x |" if shard_s else " - | - |") if sharded else ""
            print(f"| {size} | {j['run_s']:.3g} s | {j['compile_s']:.1f} s | {j['loop_s']:.3g} s{mark(j['loop_extrapolated'])} "
                  f"| {sl['time_s']:.3g} s{mark(sl['extrapolated'])} | {sl['time_s'] / j['run_s']:.3g}x |{extra}"
                  f" {j['solved']}/{size} | {sl['solved']}/{sl['instances_run']} | {it['min']}/{it['median']:g}/{it['max']} |")  # fmt: skip
    largest = max(summary["sizes"])
    for name in jc_names:
        j = rows[str(largest)].get(name)
        if j is not None:
            on_all = (f"{largest / j['sharded_run_s']:.0f} problems/s sharded over {m['host_devices']} devices, "
                      if j.get("sharded_run_s") else "")  # fmt: skip
            print(f"\n{LABELS[name]} at batch {largest}: {j['problems_per_s']:.0f} problems/s vmapped, {on_all}"
                  f"{largest / j['loop_s']:.0f} problems/s as a loop of jitted solves "
                  f"(SLSQP loop: {rows[str(largest)]['slsqp']['problems_per_s']:.0f} problems/s)")  # fmt: skip


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11.0, 4.8))
    sizes = summary["sizes"]
    rows = summary["results"]
    for name in summary["solvers"]:
        if name == "slsqp":
            continue
        pts = [(s, rows[str(s)][name]) for s in sizes if name in rows[str(s)]]
        xs = [s for s, _ in pts]
        ax.plot(xs, [r["run_s"] for _, r in pts], "o-", color=COLOURS[name], label=f"{LABELS[name]} run")
        shard = [(s, r["sharded_run_s"]) for s, r in pts if r.get("sharded_run_s")]
        if shard:
            ax.plot([s for s, _ in shard], [t for _, t in shard], "D--", color=COLOURS[name], mfc="none",
                    label=f"{LABELS[name]} run, sharded over {summary['machine']['host_devices']} devices")  # fmt: skip
        ax.plot(xs, [r["compile_s"] for _, r in pts], "x:", color=COLOURS[name], label=f"{LABELS[name]} compile")
        ax.plot(xs, [r["loop_s"] for _, r in pts], "^-.", color=COLOURS[name], mfc="none",
                label=f"{LABELS[name]} loop of jitted solves")  # fmt: skip
    measured = [(s, rows[str(s)]["slsqp"]) for s in sizes if not rows[str(s)]["slsqp"]["extrapolated"]]
    guessed = [(s, rows[str(s)]["slsqp"]) for s in sizes if rows[str(s)]["slsqp"]["extrapolated"]]
    ax.plot([s for s, _ in measured], [r["time_s"] for _, r in measured], "s-", color=COLOURS["slsqp"],
            label=LABELS["slsqp"])
    if guessed:
        last = measured[-1:] + guessed
        ax.plot([s for s, _ in last], [r["time_s"] for _, r in last], "s--", color=COLOURS["slsqp"], mfc="none",
                label=f"{LABELS['slsqp']} (extrapolated)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (problems)")
    ax.set_ylabel("wall time (s)")
    ax.set_title("HS71 family: one vmapped solve vs loops of single solves (CPU)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _loop_total(times: np.ndarray, size: int) -> tuple[float, bool]:
    """The loop's time over instances 0..size-1, extrapolated from the mean past those run."""
    if size <= len(times):
        return float(times[:size].sum()), False
    return float(times.mean() * size), True


def parse_max_size(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, value = item.partition("=")
        if name not in JC_SOLVERS or not value.isdigit():
            raise SystemExit(f"--max-size: expected SOLVER=INT with SOLVER in {', '.join(JC_SOLVERS)}, got {item!r}")
        out[name] = int(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma list of batch sizes (default {DEFAULT_SIZES})")
    parser.add_argument("--solvers", default="alm,alm-newton,sqp",
                        help=f"jc solvers, comma list from {','.join(JC_SOLVERS)} (default alm,alm-newton,sqp)")
    parser.add_argument("--max-size", default="sqp=100",
                        help="largest batch per jc solver, e.g. sqp=100,alm=10000 (default sqp=100)")
    parser.add_argument("--slsqp-max", type=int, default=1000,
                        help="instances the SLSQP loop and the jc loop run; beyond, extrapolated (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, best kept (default 3)")
    parser.add_argument("--host-devices", type=int, default=1,
                        help="split the CPU into this many JAX devices; each jc batch then also runs sharded over "
                        "them with jc.batch.sharded_vmap (default 1)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default benchmarks/results)")
    parser.add_argument("--no-save", action="store_true", help="write no files")
    parser.add_argument("--report-only", action="store_true",
                        help="print the table and redraw the plot from --out/batch.json")
    opts = parser.parse_args(argv)

    if opts.report_only:
        with open(os.path.join(opts.out, "batch.json")) as fh:
            summary = json.load(fh)
        print_table(summary)
        plot(summary, os.path.join(opts.out, "batch.png"))
        return 0

    sizes = sorted({int(s) for s in opts.sizes.split(",") if s.strip()})
    if not sizes or min(sizes) < 1:
        raise SystemExit("--sizes: positive integers, e.g. 1,10,100")
    names = [s.strip() for s in opts.solvers.split(",") if s.strip()]
    for name in names:
        if name not in JC_SOLVERS:
            raise SystemExit(f"--solvers: unknown {name!r} (known: {', '.join(JC_SOLVERS)})")
    max_size = parse_max_size(opts.max_size)
    if opts.host_devices > 1 and jax.device_count() != opts.host_devices:
        raise SystemExit(f"--host-devices {opts.host_devices}: jax sees {jax.device_count()} devices")
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "jax_devices": str(jax.devices()),
        "host_devices": opts.host_devices,
        "load_before": list(os.getloadavg()),
    }
    x0_all, params_all = instances(max(sizes), opts.seed)

    n_slsqp = min(max(sizes), opts.slsqp_max)
    print(f"SLSQP loop over {n_slsqp} instances ...", flush=True)
    slsqp = run_slsqp(x0_all[:n_slsqp], params_all[:n_slsqp], opts.repeats)
    print(f"  {slsqp['times'].sum():.2f} s, mean {1e3 * slsqp['times'].mean():.2f} ms per instance", flush=True)
    loops = {}
    for name in names:
        n_loop = min(n_slsqp, max_size.get(name, sys.maxsize))
        print(f"{LABELS[name]}: loop of jitted single solves over {n_loop} instances ...", flush=True)
        loops[name] = run_jc_loop(name, x0_all[:n_loop], params_all[:n_loop], opts.repeats)
        print(f"  {loops[name].sum():.2f} s, mean {1e3 * loops[name].mean():.2f} ms per instance", flush=True)

    results: dict[str, dict] = {}
    for size in sizes:
        x0, params = x0_all[:size], params_all[:size]
        row: dict[str, Any] = {}
        xs = {"slsqp": slsqp["x"][: min(size, n_slsqp)]}
        runs = {}
        for name in names:
            if size > max_size.get(name, sys.maxsize):
                continue
            print(f"{LABELS[name]} batch {size} ...", flush=True)
            runs[name] = run_jc(name, x0, params, opts.repeats)
            xs[name] = runs[name]["x"]
            print(f"  compile {runs[name]['compile_s']:.1f} s, run {runs[name]['run_s']:.3f} s", flush=True)
        solved = score(xs, params)
        for name, r in runs.items():
            it = r["iterations"]
            loop_time, loop_extrapolated = _loop_total(loops[name], size)
            row[name] = {
                "compile_s": r["compile_s"],
                "run_s": r["run_s"],
                "sharded_run_s": r["sharded_run_s"],
                "loop_s": loop_time,
                "loop_extrapolated": loop_extrapolated,
                "problems_per_s": size / r["run_s"],
                "solved": int(solved[name].sum()),
                "converged": int(r["converged"].sum()),
                "status_counts": r["status_counts"],
                "iterations": {
                    "min": int(it.min()), "median": float(np.median(it)), "max": int(it.max()), "mean": float(it.mean())
                },
                "member_utilisation": member_utilisation(it),
            }
        ran = min(size, n_slsqp)
        total, extrapolated = _loop_total(slsqp["times"], size)
        row["slsqp"] = {
            "time_s": total,
            "problems_per_s": size / total,
            "instances_run": ran,
            "extrapolated": extrapolated,
            "solved": int(solved["slsqp"].sum()),
            "success": int(slsqp["success"][:ran].sum()),
        }
        results[str(size)] = row

    machine["load_after"] = list(os.getloadavg())
    summary = {
        "family": "HS71 with a~U(20,30), b~U(36,44), c~U(0.5,1.5), x0~U(1,5)^4",
        "seed": opts.seed,
        "sizes": sizes,
        "solvers": names + ["slsqp"],
        "max_size": max_size,
        "slsqp_instances_run": n_slsqp,
        "repeats": opts.repeats,
        "slsqp_note": f"loop times at sizes > {n_slsqp} extrapolated linearly from the mean of {n_slsqp} instances",
        "timing": "jc run: best of `repeats` calls (1 once a call takes > 1 s) of the compiled vmapped solve "
        "after a warm-up call; "
        "loops (SLSQP, jc jitted single solves): sum over instances of each instance's best of `repeats`",
        "scoring": "solved = violation <= 1e-6 and f <= f_best + 1e-5 max(1,|f_best|), "
        "f_best = best feasible f of any method",
        "machine": machine,
        "results": results,
    }
    print_table(summary)
    if not opts.no_save:
        os.makedirs(opts.out, exist_ok=True)
        with open(os.path.join(opts.out, "batch.json"), "w") as fh:
            json.dump(summary, fh, indent=1)
        plot(summary, os.path.join(opts.out, "batch.png"))
        print(f"\nwrote {os.path.join(opts.out, 'batch.json')} and batch.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
