"""jconstrain against peers on the Hock-Schittkowski problems of sif2jax (CUTEst).

    python benchmarks/cutest.py                                   # every available solver, 97 problems
    python benchmarks/cutest.py --solvers sqp --problems HS71,HS21 --verbose
    python benchmarks/cutest.py --solvers slsqp,sqp --limit 10 -v
    python benchmarks/cutest.py --solvers sqp --set sqp.opt_tol=1e-7 --trace --problems HS71
    python benchmarks/cutest.py --report-only                     # table/summary/plot from saved files

Problems and conventions replicate the anchors (../shared/anchors/README.md, see
`benchmarks/_hs.py`): the 97 sif2jax constrained HS problems with n <= 50 and a stored
optimum, float64, the flattened y0 as variables, inequalities negated to c(x) <= 0,
bounds native. Each returned point is scored here (f and max violation incl. bounds
evaluated at the returned x): solved = viol <= 1e-6 and f <= f_ref + 1e-5 max(1, |f_ref|)
with f_ref from the anchors' hs_reference.json.

Solvers (`--solvers`, comma separated; default: every available one):
  sqp, penalty, alm   jc.SQP(), jc.Penalty(), jc.AugmentedLagrangian() with default settings
                      (a name missing from `jconstrain` is skipped); override fields with
                      `--set sqp.opt_tol=1e-7` (repeatable). Timed as
                      `jax.jit(solve).lower(x0).compile()` (compile_time) and the compiled
                      call with block_until_ready (time, best of --repeats).
  slsqp, trust-constr SciPy, maxiter 1000, on jitted jax.grad / jax.jacrev derivatives
                      (compiled before timing; time = wall time of `minimize`).
  ipopt               IPOPT via cyipopt (L-BFGS Hessian, tol 1e-8), only if importable.
  pygranso            not run here (the anchors hold its results); listed for completeness.

Outputs (to --out; default benchmarks/results for a run of the whole set, else
$TMPDIR/jconstrain_cutest so that a quick subset run never overwrites the tracked
results): cutest_<solver>.jsonl (one line per problem, written as it goes),
cutest_summary.json, cutest_profile.png (Dolan-More performance profile on run time,
solved problems only, with the anchors' peers dashed, "measured separately").
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import _hs  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "results")
JC_SOLVERS = {"sqp": "SQP", "penalty": "Penalty", "alm": "AugmentedLagrangian"}
SCIPY_SOLVERS = {"slsqp": "SLSQP", "trust-constr": "trust-constr"}
ALL_SOLVERS = ["sqp", "penalty", "alm", "slsqp", "trust-constr", "ipopt", "pygranso"]
LABELS = {
    "sqp": "jc.SQP",
    "penalty": "jc.Penalty",
    "alm": "jc.AugmentedLagrangian",
    "slsqp": "SciPy SLSQP",
    "trust-constr": "SciPy trust-constr",
    "ipopt": "IPOPT L-BFGS",
}
# one colour per method: this run's SciPy/IPOPT and the anchors' share it (solid vs dashed)
COLOURS = {
    "sqp": "C3", "penalty": "C5", "alm": "C6", "slsqp": "C0", "trust-constr": "C1",
    "ipopt": "C2", "ipopt-lbfgs": "C2", "ipopt-exact": "C8", "pygranso": "C7",
}  # fmt: skip
ANCHOR_LABELS = {
    "slsqp": "SciPy SLSQP",
    "trust-constr": "SciPy trust-constr",
    "ipopt-lbfgs": "IPOPT L-BFGS",
    "ipopt-exact": "IPOPT exact Hessian",
    "pygranso": "PyGRANSO",
}
MAXITER = 1000


# --------------------------------------------------------------------------- solvers


def available(name: str) -> tuple[bool, str]:
    """Whether solver `name` can run here, and why not."""
    if name in JC_SOLVERS:
        import jconstrain as jc

        ok = getattr(jc, JC_SOLVERS[name], None) is not None
        return ok, "" if ok else f"jconstrain has no {JC_SOLVERS[name]}"
    if name in SCIPY_SOLVERS:
        try:
            import scipy.optimize  # noqa: F401
        except ImportError:
            return False, "scipy is not installed"
        return True, ""
    if name == "ipopt":
        try:
            import cyipopt  # noqa: F401
        except ImportError:
            return False, "cyipopt is not installed"
        return True, ""
    if name == "pygranso":
        return False, "not run by this script (see the anchors' hs_pygranso.jsonl)"
    return False, f"unknown solver {name!r} (known: {', '.join(ALL_SOLVERS)})"


def runnable(names: list[str], check: Callable[[str], tuple[bool, str]] = available) -> list[str]:
    """The solvers of `names` that `check` says can run here; an unknown name stops the
    script, one that cannot run here is skipped with a note on stderr."""
    solvers = []
    for name in names:
        ok, why = check(name)
        if ok:
            solvers.append(name)
        elif "unknown" in why:
            raise SystemExit(why)
        else:
            print(f"skipping {name}: {why}", file=sys.stderr)
    if not solvers:
        raise SystemExit("no solver to run")
    return solvers


def make_jc_solver(name: str, overrides: dict[str, Any]):
    import jconstrain as jc

    cls = getattr(jc, JC_SOLVERS[name])
    return cls(**overrides)


def _best_of(run: Callable[[], Any], repeats: int, fast: float = 1.0) -> tuple[Any, float]:
    """Run up to `repeats` times (once more only while a run takes < `fast` s); best time."""
    best, out = math.inf, None
    for i in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = run()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        if dt >= fast:
            break
    return out, best


def run_jc(problem: _hs.HSProblem, ev: _hs.Evaluator, name: str, overrides: dict, repeats: int, trace: bool) -> dict:
    import jax.numpy as jnp

    import jconstrain as jc

    solver = make_jc_solver(name, overrides)
    jp = problem.jc_problem()
    x0 = jnp.asarray(problem.x0)
    fn = jax.jit(lambda z: jc.solve(jp, z, solver, verbose=trace))
    t0 = time.perf_counter()
    compiled = fn.lower(x0).compile()
    compile_time = time.perf_counter() - t0
    sol, run_time = _best_of(lambda: jax.block_until_ready(compiled(x0)), 1 if trace else repeats)
    x = np.asarray(sol.x, np.float64)
    rec = _hs.score(ev, x)
    code = int(sol.status)
    try:
        status = jc.Status(code).name
    except ValueError:
        status = f"UNKNOWN({code})"
    rec.update(
        status=status,
        iters=int(sol.stats.iterations),
        nfev=int(sol.stats.evaluations),
        time=run_time,
        compile_time=compile_time,
        solver_f=float(sol.f),
        solver_viol=float(sol.stats.violation),
    )
    return rec


def _dict_constraints(problem: _hs.HSProblem, ev: _hs.Evaluator) -> list[dict]:
    """SLSQP/IPOPT-style constraint dicts; their inequalities are fun(x) >= 0 (the sif2jax sign)."""
    constraints = []
    if problem.meq:
        constraints.append({"type": "eq", "fun": ev.eq, "jac": ev.jac_eq})
    if problem.min:
        constraints.append({"type": "ineq", "fun": lambda x: -ev.ineq(x), "jac": lambda x: -ev.jac_ineq(x)})
    return constraints


def _scipy_style_record(ev: _hs.Evaluator, res, run_time: float) -> dict:
    """The JSONL record of a SciPy-style OptimizeResult, scored at its x."""
    rec = _hs.score(ev, res.x)
    message = str(getattr(res, "message", "")).strip().splitlines()[0] if getattr(res, "message", "") else ""
    rec.update(
        status=f"{res.status}: {message}"[:80],
        iters=int(getattr(res, "nit", -1)),
        nfev=int(getattr(res, "nfev", -1)),
        time=run_time,
        compile_time=None,
        solver_f=float(res.fun),
        solver_viol=None,
    )
    return rec


def _scipy_bounds(problem: _hs.HSProblem):
    from scipy.optimize import Bounds

    return Bounds(problem.lower, problem.upper) if problem.has_bounds else None


def run_scipy(problem: _hs.HSProblem, ev: _hs.Evaluator, name: str, repeats: int) -> dict:
    from scipy.optimize import NonlinearConstraint, minimize

    method = SCIPY_SOLVERS[name]
    if method == "SLSQP":
        constraints = _dict_constraints(problem, ev)
    else:
        constraints = []
        if problem.meq:
            constraints.append(NonlinearConstraint(ev.eq, 0.0, 0.0, jac=ev.jac_eq))
        if problem.min:
            constraints.append(NonlinearConstraint(ev.ineq, -np.inf, 0.0, jac=ev.jac_ineq))
    bounds = _scipy_bounds(problem)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return minimize(
                ev.f, problem.x0.copy(), jac=ev.grad, method=method, bounds=bounds,
                constraints=constraints, options={"maxiter": MAXITER},
            )  # fmt: skip

    return _scipy_style_record(ev, *_best_of(run, repeats))


def run_ipopt(problem: _hs.HSProblem, ev: _hs.Evaluator, name: str, repeats: int) -> dict:
    import cyipopt

    constraints = _dict_constraints(problem, ev)
    bounds = list(zip(problem.lower, problem.upper)) if problem.has_bounds else None
    options = {"tol": 1e-8, "max_iter": MAXITER, "hessian_approximation": "limited-memory", "print_level": 0, "sb": "yes"}

    def run():
        return cyipopt.minimize_ipopt(ev.f, problem.x0.copy(), jac=ev.grad, constraints=constraints, bounds=bounds, options=options)

    return _scipy_style_record(ev, *_best_of(run, repeats))


def run_one(problem: _hs.HSProblem, ev: _hs.Evaluator, name: str, opts) -> dict:
    """One solver on one problem: a full record; exceptions become failed records."""
    base = {
        "name": problem.name,
        "n": problem.n,
        "meq": problem.meq,
        "min": problem.min,
        "fstar": problem.fstar,
        "f_ref": problem.f_ref,
    }
    t0 = time.perf_counter()
    try:
        if name in JC_SOLVERS:
            rec = run_jc(problem, ev, name, opts.overrides.get(name, {}), opts.repeats, opts.trace)
        elif name in SCIPY_SOLVERS:
            rec = run_scipy(problem, ev, name, opts.repeats)
        elif name == "ipopt":
            rec = run_ipopt(problem, ev, name, opts.repeats)
        else:
            raise ValueError(f"cannot run solver {name!r}")
        rec["error"] = None
    except Exception as err:  # a failure to record, never to stop the benchmark
        rec = {
            "f": None, "viol": None, "solved": False, "x_nonfinite": None,
            "status": f"EXCEPTION: {type(err).__name__}: {err}"[:200], "iters": None, "nfev": None,
            "time": None, "compile_time": None, "solver_f": None, "solver_viol": None,
            "error": traceback.format_exc(limit=8),
        }  # fmt: skip
        if opts.verbose:
            print(rec["error"], file=sys.stderr)
    rec["wall"] = time.perf_counter() - t0
    return {**base, **rec}


# --------------------------------------------------------------------------- reporting


def _fmt(x, spec=".6e") -> str:
    return "-" if x is None else format(x, spec)


def problem_line(solver: str, r: dict) -> str:
    ok = "solved" if r["solved"] else "FAILED"
    f_ref = r.get("f_ref")
    gap = None
    if r.get("f") is not None and f_ref is not None and math.isfinite(r["f"]):
        gap = (r["f"] - f_ref) / max(1.0, abs(f_ref))
    status = r["status"] if r["status"] is not None else "-"
    if len(status) > 28 and not status.startswith("EXCEPTION"):
        status = status[:28]
    line = (
        f"[{solver:>12}] {r['name']:<9} n={r['n']:<2} meq={r['meq']:<2} min={r['min']:<2} "
        f"{ok:<6} {status:<28} f={_fmt(r['f'], '+.8e')} f_ref={_fmt(f_ref, '+.8e')} "
        f"rel={_fmt(gap, '+.1e')} viol={_fmt(r['viol'], '.1e')} it={_fmt(r['iters'], 'd')} "
        f"run={_fmt(r['time'], '.4f')}s"
    )
    if r.get("compile_time") is not None:
        line += f" compile={r['compile_time']:.1f}s"
    if r.get("x_nonfinite"):
        line += " x=NaN!"
    return line


def summarise(records: list[dict]) -> dict:
    solved = [r for r in records if r["solved"]]
    times = [r["time"] for r in solved if r["time"] is not None]
    compile_times = [r["compile_time"] for r in records if r.get("compile_time") is not None]
    failed = [
        {"name": r["name"], "status": r["status"], "f": r["f"], "f_ref": r.get("f_ref"), "viol": r["viol"]}
        for r in records
        if not r["solved"]
    ]
    statuses: dict[str, int] = {}
    for r in records:
        key = str(r["status"]).split(":")[0] if r["status"] is not None else "None"
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "solved": len(solved),
        "total": len(records),
        "median_time_solved": statistics.median(times) if times else None,
        "total_time": sum(r["time"] for r in records if r["time"] is not None),
        "median_compile_time": statistics.median(compile_times) if compile_times else None,
        "total_compile_time": sum(compile_times) if compile_times else None,
        "exceptions": sum(1 for r in records if str(r["status"]).startswith("EXCEPTION")),
        "x_nonfinite": sum(1 for r in records if r.get("x_nonfinite")),
        "statuses": statuses,
        "failed": failed,
    }


def load_anchors(names: list[str], reference: dict[str, float]) -> dict[str, list[dict]]:
    """The anchors' peers restricted to `names`, rescored with the same criterion."""
    out = {}
    for key in ANCHOR_LABELS:
        path = os.path.join(_hs.ANCHORS_DIR, f"hs_{key}.jsonl")
        if not os.path.exists(path):
            continue
        by_name = {}
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    d = json.loads(line)
                    by_name[d["name"]] = d
        recs = []
        for name in names:
            d = by_name.get(name)
            if d is None:
                continue
            f, viol = d.get("f"), d.get("viol")
            recs.append({
                "name": name, "n": d.get("n"), "meq": d.get("meq"), "min": d.get("min"),
                "f": f, "viol": viol, "f_ref": reference.get(name),
                "solved": _hs.is_solved(f, viol, reference.get(name)),
                "status": "solved" if d.get("solved") else "not solved (peer's own check)",
                "iters": d.get("iters"), "time": d.get("time"), "compile_time": None,
            })  # fmt: skip
        out[key] = recs
    return out


def print_table(
    results: dict[str, list[dict]], anchors: dict[str, list[dict]], n_problems: int, earlier: tuple = ()
) -> None:
    print()
    print(f"{'solver':<34} {'solved':>9} {'median time (solved)':>21} {'median compile':>15}")
    for name, recs in results.items():
        s = summarise(recs)
        extra = f"  ({s['exceptions']} exceptions)" if s["exceptions"] else ""
        compile_time = "-" if s["median_compile_time"] is None else f"{s['median_compile_time']:.2f} s"
        label = LABELS.get(name, name) + (" (earlier run)" if name in earlier else "")
        print(
            f"{label:<34} {s['solved']:>4} / {s['total']:<3} "
            f"{_fmt(s['median_time_solved'], '>19.4f')} s {compile_time:>15}{extra}"
        )
    for key, recs in anchors.items():
        s = summarise(recs)
        label = f"{ANCHOR_LABELS[key]} (anchor)"
        print(f"{label:<34} {s['solved']:>4} / {s['total']:<3} {_fmt(s['median_time_solved'], '>19.4f')} s {'-':>15}")
    print(f"({n_problems} problems; anchors: measured separately, rescored with the same criterion)")


def performance_profile(results: dict[str, list[dict]], anchors: dict[str, list[dict]], names: list[str], path: str) -> bool:
    """Dolan-More profile on run time (solved only); anchors dashed. False if no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no profile plot", file=sys.stderr)
        return False
    curves = [(LABELS.get(name, name), recs, "-", COLOURS.get(name)) for name, recs in results.items()]
    curves += [
        (f"{ANCHOR_LABELS[k]} (anchor, measured separately)", recs, "--", COLOURS.get(k))
        for k, recs in anchors.items()
    ]
    table = {}
    for label, recs, _, _ in curves:
        by_name = {r["name"]: r for r in recs}
        table[label] = np.array([
            by_name[n]["time"] if n in by_name and by_name[n]["solved"] and by_name[n]["time"] is not None else np.inf
            for n in names
        ])  # fmt: skip
    if not table:
        return False
    T = np.vstack(list(table.values()))
    best = np.min(T, axis=0)
    best = np.where(best > 0, best, 1e-9)
    ratios = T / best
    finite = ratios[np.isfinite(ratios)]
    tau_max = max(2.0, float(finite.max()) * 1.5) if finite.size else 2.0
    taus = np.logspace(0, np.log10(tau_max), 400)
    fig, ax = plt.subplots(figsize=(8, 5))
    for (label, _, style, colour), r in zip(curves, ratios):
        rho = [(r <= t).sum() / len(names) for t in taus]
        ax.step(
            taus, rho, where="post", linestyle=style, color=colour,
            label=f"{label} ({int(np.isfinite(r).sum())}/{len(names)})",
        )  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("τ (run time / best run time)")
    ax.set_ylabel("fraction of problems solved within τ")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Performance profile, sif2jax HS problems ({len(names)}), run time excl. compilation")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def read_jsonl(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_reports(out: str, results: dict[str, list[dict]], names: list[str], reference: dict, meta: dict) -> None:
    """Summary JSON and profile PNG, including other saved solvers over the same set."""
    merged = dict(results)
    for fname in sorted(os.listdir(out)):
        if fname.startswith("cutest_") and fname.endswith(".jsonl"):
            solver = fname[len("cutest_") : -len(".jsonl")]
            if solver in merged:
                continue
            recs = read_jsonl(os.path.join(out, fname))
            if sorted(r["name"] for r in recs) == sorted(names):
                merged[solver] = recs
    anchors = load_anchors(names, reference)
    summary = {
        "meta": meta,
        "criterion": f"viol <= {_hs.VIOL_TOL:g} and f <= f_ref + {_hs.F_TOL:g} * max(1, |f_ref|)",
        "problems": len(names),
        "solvers": {k: summarise(v) for k, v in merged.items()},
        "from_earlier_runs": sorted(set(merged) - set(results)),
        "anchors": {k: {kk: vv for kk, vv in summarise(v).items() if kk != "failed"} for k, v in anchors.items()},
    }
    with open(os.path.join(out, "cutest_summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1, default=float)
        fh.write("\n")
    print_table(merged, anchors, len(names), earlier=tuple(summary["from_earlier_runs"]))
    png = os.path.join(out, "cutest_profile.png")
    if performance_profile(merged, anchors, names, png):
        print(f"profile: {png}")
    print(f"summary: {os.path.join(out, 'cutest_summary.json')}")


# --------------------------------------------------------------------------- main


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """['sqp.opt_tol=1e-7', ...] -> {'sqp': {'opt_tol': 1e-7}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        solver, _, field = key.partition(".")
        if not field or not _:
            raise SystemExit(f"--set expects SOLVER.FIELD=VALUE, got {item!r}")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(solver.strip(), {})[field.strip()] = parsed
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solvers", default=None, help=f"comma list from {','.join(ALL_SOLVERS)} (default: all available)")
    parser.add_argument("--problems", default=None, help="comma list of problem names, e.g. HS71,HS35")
    parser.add_argument("--max-n", type=int, default=_hs.MAX_N, help="largest n (default 50)")
    parser.add_argument("--limit", type=int, default=None, help="first N problems only")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per problem, best kept (runs >= 1 s once)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SOLVER.FIELD=VALUE",
                        help="override a jc solver field, e.g. sqp.opt_tol=1e-7 (repeatable)")  # fmt: skip
    parser.add_argument("--trace", action="store_true", help="jc solvers print their iteration table (verbose=True)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per problem and solver")
    parser.add_argument("--out", default=None, help="output folder (default: see module doc)")
    parser.add_argument("--no-save", action="store_true", help="write no files")
    parser.add_argument("--report-only", action="store_true", help="rebuild table/summary/plot from the saved jsonl")
    parser.add_argument("--full-import", action="store_true", help="load problems through `import sif2jax` (slow)")
    parser.add_argument("--cache", default=None, help="JAX persistent compilation cache folder (compile times then shrink)")
    opts = parser.parse_args(argv)

    subset = opts.problems is not None or opts.limit is not None or opts.max_n != _hs.MAX_N
    out = opts.out or (os.path.join(tempfile.gettempdir(), "jconstrain_cutest") if subset else DEFAULT_OUT)
    reference = _hs.load_reference()

    if opts.report_only:
        results = {}
        for fname in sorted(os.listdir(out)):
            if fname.startswith("cutest_") and fname.endswith(".jsonl"):
                results[fname[7:-6]] = read_jsonl(os.path.join(out, fname))
        if not results:
            raise SystemExit(f"no cutest_*.jsonl in {out}")
        names = [r["name"] for r in next(iter(results.values()))]
        write_reports(out, results, names, reference, {"report_only": True})
        return 0

    if opts.cache:
        jax.config.update("jax_compilation_cache_dir", opts.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    requested = [s.strip() for s in opts.solvers.split(",")] if opts.solvers else list(ALL_SOLVERS)
    solvers = runnable(requested)
    opts.overrides = parse_overrides(opts.overrides)
    for key in opts.overrides:
        if key not in JC_SOLVERS:
            raise SystemExit(f"--set: {key!r} is not a jc solver ({', '.join(JC_SOLVERS)})")

    t0 = time.perf_counter()
    names_arg = opts.problems.split(",") if opts.problems else None
    try:
        problems = _hs.load_problems(names_arg, max_n=opts.max_n, limit=opts.limit, full_import=opts.full_import)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    print(f"{len(problems)} HS problems loaded in {time.perf_counter() - t0:.1f} s; solvers: {', '.join(solvers)}", flush=True)

    files = {}
    if not opts.no_save:
        os.makedirs(out, exist_ok=True)
        files = {name: open(os.path.join(out, f"cutest_{name}.jsonl"), "w") for name in solvers}
    results: dict[str, list[dict]] = {name: [] for name in solvers}
    try:
        for i, problem in enumerate(problems):
            ev = _hs.Evaluator(problem)
            try:
                ev.warm_up()
            except Exception as err:  # recorded per solver below through the failing calls
                print(f"{problem.name}: evaluating at x0 failed: {err!r}", file=sys.stderr)
            for name in solvers:
                rec = run_one(problem, ev, name, opts)
                results[name].append(rec)
                if name in files:
                    keep = {k: v for k, v in rec.items() if k != "error" or v is not None}
                    files[name].write(json.dumps(keep, default=float) + "\n")
                    files[name].flush()
                if opts.verbose:
                    print(problem_line(name, rec), flush=True)
            if not opts.verbose:
                done = {n: sum(r["solved"] for r in results[n]) for n in solvers}
                print(f"  {i + 1}/{len(problems)} {problem.name:<9} solved so far: {done}", flush=True)
    finally:
        for fh in files.values():
            fh.close()

    names = [p.name for p in problems]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "solvers": solvers,
        "overrides": opts.overrides,
        "repeats": opts.repeats,
        "jax": jax.__version__,
        "platform": jax.default_backend(),
        "wall_s": time.perf_counter() - t0,
    }
    if opts.no_save:
        print_table(results, load_anchors(names, reference), len(names))
    else:
        write_reports(out, results, names, reference, meta)
        print(f"results: {out}/cutest_<solver>.jsonl")
    for name in solvers:
        failed = [r for r in results[name] if not r["solved"]]
        if failed:
            print(f"{name} failed on: " + ", ".join(f"{r['name']} ({str(r['status']).split(':')[0]})" for r in failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
