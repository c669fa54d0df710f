"""GRANSO's flagship eigenvalue-optimisation demo (GRANSO demo 4 / PyGRANSO "Eigenvalue
Optimization") with jc.SQP at its default settings:

    min_X  max Im Λ(A + BXC)    s.t.   α(A + BXC) + 1 <= 0,

X p x q, Λ the spectrum and α(M) = max Re Λ(M) the spectral abscissa: make the closed-loop
matrix stable with margin 1 while keeping its eigenvalues as close to the real axis as
possible. Nonconvex, nonsmooth (max over eigenvalues) and, at eigenvalue collisions,
non-Lipschitz. A, B, C come from `tests/classic.py:spectral_abscissa_data` (n = 50,
p = q = 10, fixed seed; built around a planted feasible X_feas, so the instance is
feasible; α(A) ≈ 0.89, so X0 = 0 violates the constraint by ≈ 1.89). Eigenvalues
use `jnp.linalg.eig` (CPU only; differentiable where they are distinct).

    python benchmarks/spectral_abscissa.py [--max-steps N]

Prints the iteration table (verbose=True), then the status, final objective, max
violation, iterations, compile and run times; saves benchmarks/results/spectral_abscissa.png
(eigenvalues of A and of A + BXC at the solution with the line Re = -1, and the
convergence history parsed from the iteration table).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jconstrain as jc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import classic  # noqa: E402


class _Tee(io.TextIOBase):
    """Write to the real stdout and keep a copy (the verbose table, for the history plot)."""

    def __init__(self, stream):
        self.stream, self.lines = stream, []

    def write(self, text):
        self.stream.write(text)
        self.lines.append(text)
        return len(text)

    def flush(self):
        self.stream.flush()


def _history(text: str) -> np.ndarray:
    """Rows (iteration, f, violation, stationarity, step, mu) of the printed table."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[0].isdigit():
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                pass
    return np.array(rows).reshape(-1, 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=None, help="cap on SQP iterations (default: the solver's)")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--plot", default=os.path.join(HERE, "results", "spectral_abscissa.png"))
    opts = parser.parse_args()

    data = classic.spectral_abscissa_data(n=opts.n)
    A, B, C = (jnp.asarray(data[k]) for k in ("A", "B", "C"))
    margin = data["margin"]

    def eigenvalues(X):
        return jnp.linalg.eigvals(A + B @ X @ C)

    problem = jc.Problem(
        objective=lambda X, a: jnp.max(eigenvalues(X).imag),
        ineq=lambda X, a: jnp.reshape(jnp.max(eigenvalues(X).real) + margin, (1,)),
    )
    X0 = jnp.zeros((B.shape[1], C.shape[0]))
    solver = jc.SQP()
    n, p, q = A.shape[0], B.shape[1], C.shape[0]
    print(f"spectral abscissa demo: n = {n}, X {p} x {q} ({p * q} variables), 1 inequality")
    print(f"at X0 = 0: max Im = {float(problem.objective(X0, None)):.6f}, "
          f"alpha + 1 = {float(problem.ineq(X0, None)[0]):.6f}")
    print(f"planted feasible X_feas: max Im = {data['f_feas']:.6f}, alpha + 1 = -0.5")

    solve = jax.jit(lambda X0: jc.solve(problem, X0, solver, max_steps=opts.max_steps, verbose=True))
    start = time.perf_counter()
    compiled = solve.lower(X0).compile()
    compile_s = time.perf_counter() - start

    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        start = time.perf_counter()
        sol = jax.block_until_ready(compiled(X0))
        jax.effects_barrier()
        run_s = time.perf_counter() - start
    finally:
        sys.stdout = tee.stream
    history = _history("".join(tee.lines))

    X = np.asarray(sol.x)
    lam = np.linalg.eigvals(data["A"] + data["B"] @ X @ data["C"])
    f_check = float(np.max(lam.imag))
    viol_check = max(float(np.max(lam.real)) + margin, 0.0)
    status = jc.Status(int(sol.status))
    print()
    print(f"status            : {status.name} ({status.description})")
    print(f"final objective   : {float(sol.f):.10f}  (numpy recheck {f_check:.10f})")
    print(f"max violation     : {float(sol.stats.violation):.3e}  (numpy recheck {viol_check:.3e}; "
          f"alpha(A+BXC) = {float(np.max(lam.real)):.10f})")
    print(f"stationarity      : {float(sol.stats.stationarity):.3e}")
    print(f"iterations        : {int(sol.stats.iterations)}   evaluations: {int(sol.stats.evaluations)}")
    print(f"planted X_feas    : objective {data['f_feas']:.10f} (a feasible point, not an optimum)")
    print(f"time              : compile {compile_s:.1f} s, run {run_s:.1f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam_A = np.linalg.eigvals(data["A"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    ax = axes[0]
    ax.plot(lam_A.real, lam_A.imag, "o", mfc="none", color="tab:gray", label="Λ(A)")
    ax.plot(lam.real, lam.imag, "x", color="tab:red", label="Λ(A + BXC) at the solution")
    ax.axvline(-margin, color="k", ls="--", lw=1, label=f"Re = {-margin:g}")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(f"spectrum: max Im {float(sol.f):.4f}, α = {float(np.max(lam.real)):.4f}")
    ax.legend(loc="best")
    ax = axes[1]
    if len(history):
        it, f, v = history[:, 0], history[:, 1], history[:, 2]
        ax.plot(it, f, color="tab:blue", label="objective max Im λ")
        ax.set_xlabel("iteration")
        ax.set_ylabel("objective", color="tab:blue")
        ax2 = ax.twinx()
        positive = v > 0
        ax2.semilogy(it[positive], v[positive], ".", ms=3, color="tab:red", label="max violation (> 0 only)")
        ax2.set_ylabel("max violation (iterations with violation > 0)", color="tab:red")
    ax.set_title(f"jc.SQP (defaults): {status.name}, {int(sol.stats.iterations)} iterations")
    fig.tight_layout()
    os.makedirs(os.path.dirname(opts.plot), exist_ok=True)
    fig.savefig(opts.plot, dpi=120)
    print(f"plot              : {opts.plot}")


if __name__ == "__main__":
    main()
