"""Robustness of jc.SQP on problems it was not tuned on: random starts and larger problems.

    python benchmarks/robustness.py                                  # both sets, sqp,slsqp(,ipopt)
    python benchmarks/robustness.py --sets hs --starts 4 -v
    python benchmarks/robustness.py --sets large --max-n 300
    python benchmarks/robustness.py --limit 2 --starts 2 --solvers sqp,slsqp -v --no-save
    python benchmarks/robustness.py --problems HS71,HS13,ORTHREGA -v

Sets (`--sets`, comma separated; default hs,large):
  hs      the 97 HS problems of benchmarks/cutest.py (`_hs.load_problems`), each from K
          random starts (`--starts K`, default 4; every start random, the standard x0 is
          not among them). Component i of a start: uniform in [l_i, u_i] when both bounds
          are finite, else uniform in x0_i +- max(1, |x0_i|) clipped to a one-sided bound.
          Start k of a problem is drawn from numpy's default_rng([crc32(name), k]), so it
          does not depend on K, the run or the machine.
  large   sif2jax's constrained problems (`sif2jax.constrained_minimisation_problems`,
          the constrained quadratic ones included) whose class name does not start with
          "HS", with --min-n < n <= --max-n (default 50 < n <= 300), from their standard
          start y0 only. Their sizes come from `_hs.constrained_sizes`, cached in the temp
          folder per sif2jax version (the first run builds it: about two minutes); only
          the selected modules are imported after that. A problem whose load, wrapping
          or evaluation at y0 fails is skipped, with its reason, in the summary.
Problems are wrapped as in benchmarks/cutest.py (`_hs.wrap`/`_hs.wrap_any`: the
flattened y0, inequalities negated to c(x) <= 0, bounds native, float64).

Solvers (`--solvers`, comma separated; default sqp,slsqp,ipopt):
  sqp     jc.SQP() with default settings, compiled once per problem as
          `jax.jit(lambda x0: jc.solve(problem, x0, jc.SQP())).lower(x0).compile()`
          (compile_time, the same for all starts of a problem) and the compiled call timed
          per start with block_until_ready (time, one run).
  slsqp   SciPy SLSQP as in cutest.py (`cutest.run_scipy`: maxiter 1000, jitted jax
          derivatives compiled before timing), one run per start.
  ipopt   IPOPT L-BFGS via cyipopt as in cutest.py (`cutest.run_ipopt`), only where
          cyipopt imports (else skipped with a note).

Scoring, per (problem, start, solver): f and the max violation (equalities,
inequalities, bounds) evaluated here at the returned x (`_hs.score`); solved =
viol <= 1e-6 and f <= f_ref + 1e-5 max(1, |f_ref|), where f_ref of a problem = the
minimum of its reference (HS: the anchors' hs_reference.json; large: sif2jax's
expected_objective_value where stored) and the lowest f of every feasible (viol <= 1e-6)
point returned in this run (any solver, any start). A problem with neither has no
f_ref and nothing solved on it. A false INFEASIBLE is a jc.SQP result with status
INFEASIBLE on a problem where some solver returned a feasible point from some start.
An exception in compile or solve is recorded as status ERROR and the run goes on.

Output: a table per set and solver (instances, solved, problems solved from every /
some start, errors, false INFEASIBLE, median run time of solved instances, median
compile time per problem for jc) with jc.SQP's status counts; -v adds a line per
instance. Files (to --out; default benchmarks/results for a run without --problems or
--limit, else $TMPDIR/jconstrain_robustness; none with --no-save):
robustness_<solver>.jsonl (one line per instance, written after each problem) and
robustness_summary.json (the table, status counts, false INFEASIBLE and failure lists,
skipped problems, settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
import zlib
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import _hs  # noqa: E402
import cutest  # noqa: E402  (its runners, labels and per-instance line)

DEFAULT_OUT = os.path.join(HERE, "results")
SETS = ("hs", "large")
ALL_SOLVERS = ("sqp", "slsqp", "ipopt")
DEFAULT_STARTS = 4
MIN_N, MAX_N = 50, 300


# --------------------------------------------------------------------------- problems


def random_starts(problem: _hs.HSProblem, count: int) -> list[np.ndarray]:
    """`count` deterministic random start points of `problem` (see the module doc)."""
    lo, hi, x0 = problem.lower, problem.upper, problem.x0
    both = np.isfinite(lo) & np.isfinite(hi)
    radius = np.maximum(1.0, np.abs(x0))
    with np.errstate(invalid="ignore", over="ignore"):
        base = np.where(both, lo, x0 - radius)
        width = np.where(both, hi - lo, 2.0 * radius)
    seed = zlib.crc32(problem.name.encode())
    starts = []
    for k in range(count):
        u = np.random.default_rng([seed, k]).random(problem.n)
        x = base + u * width
        x = np.where(~both & np.isfinite(lo), np.maximum(x, lo), x)
        x = np.where(~both & np.isfinite(hi), np.minimum(x, hi), x)
        starts.append(x.astype(np.float64))
    return starts


def load_sets(opts) -> tuple[list[tuple[str, _hs.HSProblem]], list[dict]]:
    """[(set, problem)] in set order, and the skipped problems [{set, name, n, reason}]."""
    wanted = None if opts.problems is None else {s.strip().upper() for s in opts.problems.split(",") if s.strip()}
    chosen: list[tuple[str, _hs.HSProblem]] = []
    skipped: list[dict] = []
    found: set[str] = set()
    if "hs" in opts.sets and (wanted is None or any(w.startswith("HS") for w in wanted)):
        problems = _hs.load_problems(None, full_import=opts.full_import)
        if wanted is not None:
            problems = [p for p in problems if p.name.upper() in wanted]
        if opts.limit is not None:
            problems = problems[: opts.limit]
        chosen += [("hs", p) for p in problems]
        found |= {p.name.upper() for p in problems}
        print(f"hs: {len(chosen)} HS problems x {opts.starts} random starts", flush=True)
    if "large" in opts.sets and (wanted is None or any(not w.startswith("HS") for w in wanted)):

        def select(name: str, n: int | None) -> bool:
            if name.startswith("HS") or (wanted is not None and name.upper() not in wanted):
                return False
            return n is None or opts.min_n < n <= opts.max_n

        t0 = time.perf_counter()
        problems, failed = _hs.load_constrained(select, full_import=opts.full_import)
        if opts.limit is not None:
            problems = problems[: opts.limit]
        chosen += [("large", p) for p in problems]
        found |= {p.name.upper() for p in problems} | {s["name"].upper() for s in failed}
        skipped += [{"set": "large", **s} for s in failed]
        print(
            f"large: {len(problems)} non-HS constrained problems with {opts.min_n} < n <= {opts.max_n} "
            f"({len(failed)} failed to load) in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        for p in problems:
            fstar = "-" if p.fstar is None else f"{p.fstar:+.6e}"
            print(f"  {p.name:<10} n={p.n:<4} meq={p.meq:<4} min={p.min:<4} bounds={'y' if p.has_bounds else 'n'} f*={fstar}")
        for s in failed:
            print(f"  skipped {s['name']:<10} n={s['n']}: {s['reason']}")
    if wanted is not None and wanted - found:
        raise SystemExit(
            f"unknown or excluded problems: {sorted(wanted - found)} (HS: the cutest.py set; "
            f"others: non-HS sif2jax constrained problems with {opts.min_n} < n <= {opts.max_n})"
        )
    return chosen, skipped


# --------------------------------------------------------------------------- solvers


def available(name: str) -> tuple[bool, str]:
    if name not in ALL_SOLVERS:
        return False, f"unknown solver {name!r} (known: {', '.join(ALL_SOLVERS)})"
    return cutest.available(name)


def _error_record(err: BaseException, verbose: bool) -> dict:
    rec = {
        "f": None, "viol": None, "solved": False, "x_nonfinite": None,
        "status": f"ERROR: {type(err).__name__}: {err}"[:200], "iters": None, "nfev": None,
        "time": None, "compile_time": None, "solver_f": None, "solver_viol": None,
        "error": traceback.format_exc(limit=8),
    }  # fmt: skip
    if verbose:
        print(rec["error"], file=sys.stderr)
    return rec


def _guard(run: Callable[[], dict], verbose: bool) -> dict:
    """run(), with an exception turned into an ERROR record; wall time added."""
    t0 = time.perf_counter()
    try:
        rec = run()
        rec["error"] = None
    except Exception as err:  # a failure to record, never to stop the benchmark
        rec = _error_record(err, verbose)
    rec["wall"] = time.perf_counter() - t0
    return rec


def run_sqp(problem: _hs.HSProblem, ev: _hs.Evaluator, starts: list[np.ndarray], verbose: bool) -> list[dict]:
    """jc.SQP() from every start, compiled once: one record per start."""
    import jax.numpy as jnp

    import jconstrain as jc

    t0 = time.perf_counter()
    try:
        jp = problem.jc_problem()
        fn = jax.jit(lambda x0: jc.solve(jp, x0, jc.SQP()))
        compiled = fn.lower(jnp.asarray(starts[0])).compile()
    except Exception as err:
        rec = _error_record(err, verbose)
        rec["wall"] = time.perf_counter() - t0
        return [dict(rec) for _ in starts]
    compile_time = time.perf_counter() - t0

    def one(x0: np.ndarray) -> dict:
        t = time.perf_counter()
        sol = jax.block_until_ready(compiled(jnp.asarray(x0)))
        run_time = time.perf_counter() - t
        rec = _hs.score(ev, np.asarray(sol.x, np.float64))
        code = int(sol.status)
        try:
            status = jc.Status(code).name
        except ValueError:
            status = f"UNKNOWN({code})"
        rec.update(
            status=status, iters=int(sol.stats.iterations), nfev=int(sol.stats.evaluations),
            time=run_time, compile_time=compile_time, solver_f=float(sol.f), solver_viol=float(sol.stats.violation),
        )  # fmt: skip
        return rec

    records = []
    for x0 in starts:
        rec = _guard(lambda: one(x0), verbose)
        rec["compile_time"] = compile_time  # shared by the starts (also on an ERROR of the run)
        records.append(rec)
    return records


def run_peer(problem: _hs.HSProblem, ev: _hs.Evaluator, name: str, starts: list[np.ndarray], verbose: bool) -> list[dict]:
    """SLSQP / IPOPT (cutest.py's runners, one run each) from every start."""
    records = []
    for x0 in starts:
        at_start = dataclasses.replace(problem, x0=np.array(x0, np.float64))
        if name == "slsqp":
            records.append(_guard(lambda: cutest.run_scipy(at_start, ev, "slsqp", 1), verbose))
        else:
            records.append(_guard(lambda: cutest.run_ipopt(at_start, ev, "ipopt", 1), verbose))
    return records


# --------------------------------------------------------------------------- scoring


def finalise(set_name: str, problem: _hs.HSProblem, results: dict[str, list[dict]]) -> None:
    """Give every record of one problem its f_ref (reference and best feasible f of the
    run), solved flag and false-INFEASIBLE flag (in place)."""
    given = problem.f_ref if set_name == "hs" else problem.fstar
    if given is not None and not math.isfinite(given):
        given = None
    feasible = [
        r["f"]
        for recs in results.values()
        for r in recs
        if r["viol"] is not None and r["f"] is not None and math.isfinite(r["f"]) and r["viol"] <= _hs.VIOL_TOL
    ]
    candidates = ([given] if given is not None else []) + feasible
    f_ref = min(candidates) if candidates else None
    source = None if f_ref is None else ("reference" if given is not None and f_ref == given else "run")
    for solver, recs in results.items():
        for r in recs:
            r.update(f_ref=f_ref, f_ref_given=given, f_ref_source=source)
            r["solved"] = _hs.is_solved(r["f"], r["viol"], f_ref)
            if solver == "sqp":
                r["false_infeasible"] = r["status"] == "INFEASIBLE" and bool(feasible)


def _status_key(status) -> str:
    return "None" if status is None else str(status).split(":")[0]


def summarise(records: list[dict], jc: bool) -> dict:
    solved = [r for r in records if r["solved"]]
    times = [r["time"] for r in solved if r["time"] is not None]
    per_problem: dict[str, list[dict]] = {}
    for r in records:
        per_problem.setdefault(r["name"], []).append(r)
    compile_times = [recs[0]["compile_time"] for recs in per_problem.values() if recs[0].get("compile_time") is not None]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[_status_key(r["status"])] = statuses.get(_status_key(r["status"]), 0) + 1
    false_inf = [f"{r['name']}#{r['start']}" for r in records if r.get("false_infeasible")]
    out = {
        "instances": len(records),
        "solved": len(solved),
        "problems": len(per_problem),
        "problems_solved_all_starts": sum(all(r["solved"] for r in recs) for recs in per_problem.values()),
        "problems_solved_any_start": sum(any(r["solved"] for r in recs) for recs in per_problem.values()),
        "errors": sum(1 for r in records if str(r["status"]).startswith("ERROR")),
        "x_nonfinite": sum(1 for r in records if r.get("x_nonfinite")),
        "median_time_solved": statistics.median(times) if times else None,
        "total_time": sum(r["time"] for r in records if r["time"] is not None),
        "median_compile_time": statistics.median(compile_times) if compile_times else None,
        "total_compile_time": sum(compile_times) if compile_times else None,
        "statuses": dict(sorted(statuses.items(), key=lambda kv: -kv[1])),
        "failed": [
            {"name": r["name"], "start": r["start"], "status": r["status"], "f": r["f"], "f_ref": r["f_ref"], "viol": r["viol"]}
            for r in records
            if not r["solved"]
        ],
    }
    if jc:
        out["false_infeasible"] = len(false_inf)
        out["false_infeasible_instances"] = false_inf
    return out


def summaries(results: dict[str, list[dict]], sets: list[str]) -> dict[str, dict[str, dict]]:
    """{set or "all": {solver: summary}} over the sets that have records."""
    out: dict[str, dict[str, dict]] = {}
    for set_name in list(sets) + ["all"]:
        per = {}
        for solver, recs in results.items():
            sel = [r for r in recs if set_name == "all" or r["set"] == set_name]
            if sel:
                per[solver] = summarise(sel, jc=solver == "sqp")
        if per:
            out[set_name] = per
    if len([s for s in sets if s in out]) <= 1:
        out.pop("all", None)
    return out


def print_table(table: dict[str, dict[str, dict]], skipped: list[dict]) -> None:
    print()
    head = (
        f"{'set':<6} {'solver':<14} {'solved':>13} {'problems all/any':>19} {'errors':>6} "
        f"{'false INF':>9} {'median run (solved)':>20} {'median compile':>14}"
    )
    print(head)
    print("-" * len(head))
    for set_name, per in table.items():
        for solver, s in per.items():
            compile_time = "-" if s["median_compile_time"] is None else f"{s['median_compile_time']:.2f} s"
            run_time = "-" if s["median_time_solved"] is None else f"{s['median_time_solved']:.4f} s"
            false_inf = str(s["false_infeasible"]) if "false_infeasible" in s else "-"
            print(
                f"{set_name:<6} {cutest.LABELS.get(solver, solver):<14} {s['solved']:>5} / {s['instances']:<5} "
                f"{s['problems_solved_all_starts']:>4} / {s['problems_solved_any_start']:<4} of {s['problems']:<4} "
                f"{s['errors']:>6} {false_inf:>9} {run_time:>20} {compile_time:>14}"
            )
    for set_name, per in table.items():
        s = per.get("sqp")
        if s is None:
            continue
        print(f"jc.SQP statuses [{set_name}]: " + ", ".join(f"{k} {v}" for k, v in s["statuses"].items()))
        if s["false_infeasible_instances"]:
            print(f"jc.SQP false INFEASIBLE [{set_name}]: " + ", ".join(s["false_infeasible_instances"]))
    if skipped:
        print(f"skipped ({len(skipped)}): " + ", ".join(f"{s['name']} ({s['reason'][:60]})" for s in skipped))
    print(
        f"(solved: viol <= {_hs.VIOL_TOL:g} and f <= f_ref + {_hs.F_TOL:g} max(1, |f_ref|), f_ref = min(reference, "
        "best feasible f of the run); problems: solved from every / some start)"
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS), help="comma list from hs,large (default both)")
    parser.add_argument("--solvers", default=",".join(ALL_SOLVERS), help="comma list from sqp,slsqp,ipopt (default all available)")
    parser.add_argument("--starts", type=int, default=DEFAULT_STARTS, help="random starts per HS problem (default 4)")
    parser.add_argument("--problems", default=None, help="comma list of problem names (either set)")
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each set")
    parser.add_argument("--min-n", type=int, default=MIN_N, help="large set: n > MIN_N (default 50)")
    parser.add_argument("--max-n", type=int, default=MAX_N, help="large set: n <= MAX_N (default 300)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per instance (problem, start, solver)")
    parser.add_argument("--out", default=None, help="output folder (default: see module doc)")
    parser.add_argument("--no-save", action="store_true", help="write no files")
    parser.add_argument("--full-import", action="store_true", help="load problems through `import sif2jax` (slow)")
    parser.add_argument("--cache", default=None, help="JAX persistent compilation cache folder")
    opts = parser.parse_args(argv)

    opts.sets = [s.strip() for s in opts.sets.split(",") if s.strip()]
    for s in opts.sets:
        if s not in SETS:
            raise SystemExit(f"unknown set {s!r} (known: {', '.join(SETS)})")
    if opts.starts < 1:
        raise SystemExit("--starts must be >= 1")
    solvers = cutest.runnable([s.strip() for s in opts.solvers.split(",") if s.strip()], available)
    if opts.cache:
        jax.config.update("jax_compilation_cache_dir", opts.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    subset = opts.problems is not None or opts.limit is not None
    out = opts.out or (os.path.join(tempfile.gettempdir(), "jconstrain_robustness") if subset else DEFAULT_OUT)

    t_start = time.perf_counter()
    problems, skipped = load_sets(opts)
    print(f"{len(problems)} problems; solvers: {', '.join(solvers)}", flush=True)

    files = {}
    if not opts.no_save:
        os.makedirs(out, exist_ok=True)
        files = {name: open(os.path.join(out, f"robustness_{name}.jsonl"), "w") for name in solvers}
    results: dict[str, list[dict]] = {name: [] for name in solvers}
    try:
        for i, (set_name, problem) in enumerate(problems):
            ev = _hs.Evaluator(problem)
            try:
                ev.warm_up()
                if not (math.isfinite(ev.f(problem.x0)) and math.isfinite(ev.violation(problem.x0))):
                    raise ValueError("non-finite f or constraints at x0")
            except Exception as err:
                reason = f"eval at x0: {type(err).__name__}: {err}"[:300]
                skipped.append({"set": set_name, "name": problem.name, "n": problem.n, "reason": reason})
                print(f"  skipped {problem.name}: {reason}", flush=True)
                continue
            starts = random_starts(problem, opts.starts) if set_name == "hs" else [problem.x0.copy()]
            per: dict[str, list[dict]] = {}
            for name in solvers:
                if name == "sqp":
                    recs = run_sqp(problem, ev, starts, opts.verbose)
                else:
                    recs = run_peer(problem, ev, name, starts, opts.verbose)
                base = {"set": set_name, "name": problem.name, "n": problem.n, "meq": problem.meq, "min": problem.min, "fstar": problem.fstar}
                per[name] = [{**base, "start": k if set_name == "hs" else "x0", **r} for k, r in enumerate(recs)]
            finalise(set_name, problem, per)
            for name, recs in per.items():
                results[name] += recs
                for r in recs:
                    if name in files:
                        keep = {k: v for k, v in r.items() if k != "error" or v is not None}
                        files[name].write(json.dumps(keep, default=float) + "\n")
                    if opts.verbose:
                        print(cutest.problem_line(name, {**r, "name": f"{r['name']}#{r['start']}"}), flush=True)
                if name in files:
                    files[name].flush()
            if not opts.verbose:
                done = {n: f"{sum(r['solved'] for r in recs)}/{len(recs)}" for n, recs in per.items()}
                compile_time = per.get("sqp", [{}])[0].get("compile_time")
                extra = "" if compile_time is None else f" compile={compile_time:.1f}s"
                print(f"  {i + 1}/{len(problems)} [{set_name}] {problem.name:<10} n={problem.n:<4} solved: {done}{extra}", flush=True)
    finally:
        for fh in files.values():
            fh.close()

    table = summaries(results, opts.sets)
    print_table(table, skipped)
    if not opts.no_save:
        summary = {
            "meta": {
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "sets": opts.sets,
                "solvers": solvers,
                "starts": opts.starts,
                "min_n": opts.min_n,
                "max_n": opts.max_n,
                "problems_arg": opts.problems,
                "limit": opts.limit,
                "jax": jax.__version__,
                "platform": jax.default_backend(),
                "wall_s": time.perf_counter() - t_start,
            },
            "criterion": (
                f"viol <= {_hs.VIOL_TOL:g} and f <= f_ref + {_hs.F_TOL:g} * max(1, |f_ref|), f_ref = min(reference, "
                "lowest f of a feasible point returned in this run)"
            ),
            "problems": {s: [p.name for k, p in problems if k == s] for s in opts.sets},
            "skipped": skipped,
            "summary": table,
        }
        path = os.path.join(out, "robustness_summary.json")
        with open(path, "w") as fh:
            json.dump(summary, fh, indent=1, default=float)
            fh.write("\n")
        print(f"summary: {path}\nresults: {out}/robustness_<solver>.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
