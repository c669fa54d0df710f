"""Infeasible problems: jconstrain's solvers against SciPy's SLSQP on the same suite.

    python benchmarks/infeasible.py            # table on stdout, benchmarks/results/infeasible.json

The suite is the reliability tests' (`tests/reliability/cases.py`): 13 infeasible
problems (inconsistent linear equalities and inequalities, x² + 1 <= 0, disjoint balls,
a ring outside a disc, two parabolas, constraints against the bounds, an empty box,
...) and 6 feasible but hard ones of the same shapes (one-point feasible sets, a thin
lens, a thin band, a tiny far disc), which must not be called infeasible.

jc.SQP, jc.AugmentedLagrangian and jc.Penalty run with default settings, each family
as one vmapped solve. SLSQP runs per problem with exact gradients (jax.grad/jacobian),
maxiter 1000. For every returned x the table gives the status (SLSQP: its exit mode
and `success`), the max violation, and whether x is a least-violation point: a local
minimisation of the violation from x (SciPy, as in the tests) lowers neither ½||w||²
(bounds soft, the penalty methods' measure) nor ||w||_1 (bounds hard, SQP's) by more
than 1e-6 relative. An infeasible problem is "answered" when the solver reports
infeasibility (jc: INFEASIBLE; SLSQP: success = False, since it has no such status)
at a least-violation point.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

from reliability import cases  # noqa: E402

OUT = os.path.join(HERE, "results", "infeasible.json")
JC = ["SQP", "AugmentedLagrangian", "Penalty"]
LABELS = {"SQP": "jc.SQP", "AugmentedLagrangian": "jc.ALM", "Penalty": "jc.Penalty", "SLSQP": "SciPy SLSQP"}


def least_violation(case: cases.Case, x: np.ndarray) -> bool:
    """Whether x is a local least-violation point in the ½||w||² (soft bounds) or the
    ||w||_1 (hard bounds) sense, to 1e-6 relative."""
    l2 = 0.5 * float(np.sum(cases.violation_residuals(case, x) ** 2))
    ok_l2 = l2 <= cases.least_violation_l2(case, x)[0] * (1 + 1e-6) + 1e-6
    lower, upper = case.bounds()
    if np.all((x >= lower) & (x <= upper)):
        l1 = float(np.sum(cases.violation_residuals(case, x, bounds_soft=False)))
        least = cases.least_violation_l1(case, x)[0]
        if l1 <= least + 1e-6 * max(1.0, least):
            return True
    return bool(ok_l2)


def run_jc() -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {name: {} for name in JC}
    for family in (cases.INEQ_FAMILY, cases.EQ_FAMILY):
        for name in JC:
            start = time.perf_counter()
            sols = cases.solve_family(family, name)
            seconds = time.perf_counter() - start
            for i, case in enumerate(family.cases):
                sol = cases.member(sols, i)
                out[name][case.name] = {
                    "status": cases.status_name(sol),
                    "x": np.asarray(sol.x).tolist(),
                    "violation": cases.max_violation(case, np.asarray(sol.x)),
                    "iterations": int(sol.stats.iterations),
                    "family_seconds_incl_compile": seconds,
                }
    return out


def run_slsqp(case: cases.Case) -> dict:
    objective = jax.jit(case.objective)
    gradient = jax.jit(jax.grad(case.objective))
    constraints = []
    if case.eq is not None:
        constraints.append({"type": "eq", "fun": jax.jit(case.eq), "jac": jax.jit(jax.jacobian(case.eq))})
    if case.ineq is not None:  # SciPy's inequalities are fun(x) >= 0
        neg = lambda x: -case.ineq(x)
        constraints.append({"type": "ineq", "fun": jax.jit(neg), "jac": jax.jit(jax.jacobian(neg))})
    lower, upper = case.bounds()
    bounds = None
    if case.lower is not None or case.upper is not None:
        bounds = scipy.optimize.Bounds(lower, upper)
    x0 = np.asarray(case.x0, float)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = scipy.optimize.minimize(
                lambda x: float(objective(jnp.asarray(x))),
                x0,
                jac=lambda x: np.asarray(gradient(jnp.asarray(x))),
                method="SLSQP",
                bounds=bounds,
                constraints=[
                    {
                        "type": c["type"],
                        "fun": lambda x, f=c["fun"]: np.asarray(f(jnp.asarray(x))),
                        "jac": lambda x, j=c["jac"]: np.asarray(j(jnp.asarray(x))),
                    }
                    for c in constraints
                ],
                options={"maxiter": 1000},
            )
    except Exception as error:  # e.g. SciPy refusing lower > upper
        return {"status": f"raised {type(error).__name__}", "success": False, "x": None, "violation": None, "message": str(error)}
    x = np.asarray(res.x, float)
    return {
        "status": f"mode {res.status}",
        "message": str(res.message),
        "success": bool(res.success),
        "x": x.tolist(),
        "violation": cases.max_violation(case, x) if np.all(np.isfinite(x)) else None,
        "iterations": int(res.nit),
    }


def main() -> None:
    jc_results = run_jc()
    slsqp = {case.name: run_slsqp(case) for case in cases.INFEASIBLE_CASES + cases.FEASIBLE_HARD_CASES}
    records = []
    for case in cases.INFEASIBLE_CASES + cases.FEASIBLE_HARD_CASES:
        row = {"problem": case.name, "feasible": case.feasible}
        for name in JC:
            r = jc_results[name][case.name]
            r["least_violation"] = None if case.feasible or case.name == "empty-box" else least_violation(case, np.asarray(r["x"]))
            row[name] = r
        s = slsqp[case.name]
        s["least_violation"] = (
            None if case.feasible or s["x"] is None or case.name == "empty-box" else least_violation(case, np.asarray(s["x"]))
        )
        row["SLSQP"] = s
        records.append(row)

    def cell(r: dict, case_feasible: bool) -> str:
        viol = "-" if r["violation"] is None else f"{r['violation']:.2e}"
        status = r["status"] + ("" if "success" not in r else (" ok" if r["success"] else " fail"))
        mark = {True: " least", False: " NOT least", None: ""}[r["least_violation"]]
        return f"{status} {viol}{mark}"

    names = JC + ["SLSQP"]
    print("| problem | " + " | ".join(LABELS[n] for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for row in records:
        tag = "" if not row["feasible"] else " (feasible)"
        print(f"| {row['problem']}{tag} | " + " | ".join(cell(row[n], row["feasible"]) for n in names) + " |")

    summary = {}
    infeasible_rows = [r for r in records if not r["feasible"]]
    feasible_rows = [r for r in records if r["feasible"]]
    for n in names:
        if n == "SLSQP":
            reports = [not r[n]["success"] for r in infeasible_rows]
            wrong_feasible = [not r[n]["success"] for r in feasible_rows]
        else:
            reports = [r[n]["status"] == "INFEASIBLE" for r in infeasible_rows]
            wrong_feasible = [r[n]["status"] == "INFEASIBLE" for r in feasible_rows]
        least = [r[n]["least_violation"] is not False for r in infeasible_rows]
        answered = [a and b for a, b in zip(reports, least)]
        summary[n] = {
            "reports_infeasible": int(sum(reports)),
            "claims_success_on_infeasible": int(len(reports) - sum(reports)),
            "answered (reports infeasible at a least-violation point)": int(sum(answered)),
            "feasible_hard_not_solved": int(sum(wrong_feasible)),
            "of": len(infeasible_rows),
            "feasible_hard_of": len(feasible_rows),
        }
    print()
    for n in names:
        s = summary[n]
        print(
            f"{LABELS[n]:12s} infeasibility reported {s['reports_infeasible']}/{s['of']}, answered "
            f"{s['answered (reports infeasible at a least-violation point)']}/{s['of']}; feasible-hard "
            f"{'failed' if n == 'SLSQP' else 'called INFEASIBLE'} {s['feasible_hard_not_solved']}/{s['feasible_hard_of']}"
        )
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump({"summary": summary, "problems": records}, fh, indent=1)
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
