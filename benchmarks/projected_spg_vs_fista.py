"""SPG (jc.ProjectedGradient) vs FISTA with backtracking and gradient restart.

Prints f/grad evaluations to reach stationarity ||x - P(x - g)||_inf / max(1, ||g||_inf) <= 1e-8
(float64) on smooth convex and nonconvex problems; the table in
jconstrain/solvers/projected.py comes from here. Run: python benchmarks/projected_spg_vs_fista.py
(FISTA is a plain Python loop here: compare evaluation counts, not times.)
"""
import time, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import jconstrain as jc
from jconstrain._solvers.projected import ProjectedGradient

def fista(f, P, x0, tol=1e-8, max_iter=20000):
    vg = jax.jit(jax.value_and_grad(f)); Pj = jax.jit(P)
    dot = lambda a, b: float(jnp.vdot(a, b))
    x = Pj(x0); fx, gx = vg(x); evals = 1
    y, fy, gy, t = x, fx, gx, 1.0
    L = 1.0; stat = np.inf
    for k in range(max_iter):
        L = L / 2
        while True:
            xn = Pj(y - gy / L); fn, gn = vg(xn); evals += 1
            d = xn - y
            dd = dot(d, d)
            # robust curvature test (Beck-Teboulle in gradient form)
            if dot(gn - gy, d) <= L * dd or dd == 0:
                break
            L *= 2
        # gradient-mapping restart (O'Donoghue & Candes): (y - xn).(xn - x) > 0
        if dot(y - xn, xn - x) > 0:
            t = 1.0
        tn = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = xn + (t - 1) / tn * (xn - x)
        x, fx, gx, t = xn, fn, gn, tn
        fy, gy = vg(y); evals += 1
        stat = float(jnp.max(jnp.abs(x - Pj(x - gx))) / max(1.0, float(jnp.max(jnp.abs(gx)))))
        if stat <= tol:
            return float(fx), k + 1, evals, stat
    return float(fx), max_iter, evals, stat

rng = np.random.default_rng(0)
cases = []
A = rng.standard_normal((30, 10)); b = rng.standard_normal(30)
cases.append(("simplex LS 30x10", lambda x: 0.5 * jnp.sum((A @ x - b) ** 2), jc.projections.simplex(), None, jnp.ones(10) / 10))
U, _ = np.linalg.qr(rng.standard_normal((200, 100))); V, _ = np.linalg.qr(rng.standard_normal((100, 100)))
A2 = U @ np.diag(np.logspace(0, -2, 100)) @ V.T; b2 = rng.standard_normal(200)
cases.append(("simplex LS 200x100 cond1e2", lambda x: 0.5 * jnp.sum((A2 @ x - b2) ** 2), jc.projections.simplex(), None, jnp.ones(100) / 100))
A3 = U[:, :50] @ np.diag(np.logspace(0, -2, 50)) @ V[:50, :50].T; b3 = rng.standard_normal(200)
cases.append(("NNLS 200x50 cond1e2 (box)", lambda x: 0.5 * jnp.sum((A3 @ x - b3) ** 2), None, (0.0, jnp.inf), jnp.zeros(50)))
rosen = lambda x: jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
cases.append(("Rosenbrock n=5 box", rosen, None, (-1.5, jnp.array([2, 2, 2, 0.5, 2.0])), jnp.zeros(5)))
cases.append(("Rosenbrock n=20 box [-2,0.8]", rosen, None, (-2.0, 0.8), jnp.zeros(20)))
M = rng.standard_normal((20, 20)); S = M @ M.T / 20
cases.append(("Stiefel trace 20x2", lambda X: -jnp.trace(X.T @ S @ X), jc.projections.stiefel(), None, jnp.asarray(np.linalg.qr(rng.standard_normal((20, 2)))[0])))
Q, _ = np.linalg.qr(rng.standard_normal((50, 50))); H = Q @ np.diag(np.logspace(0, 3, 50)) @ Q.T; c = 10 * rng.standard_normal(50)
cases.append(("l2-ball quad cond1e3", lambda x: 0.5 * x @ H @ x - c @ x, jc.projections.l2_ball(1.0), None, jnp.zeros(50)))

dw = lambda x: jnp.sum(x ** 4 / 4 - x ** 2 + 0.3 * x) + 0.3 * jnp.sum(x[1:] * x[:-1])
cases.append(("double-well box n=50", dw, None, (-1.2, 1.2), jnp.asarray(0.1 * rng.standard_normal(50))))
cases.append(("Rosenbrock n=10 unconstrained", rosen, None, None, jnp.tile(jnp.array([-1.2, 1.0]), 5)))
Xd = rng.standard_normal((300, 40)); yd = (Xd @ rng.standard_normal(40) + rng.standard_normal(300) > 0) * 2.0 - 1
cases.append(("logistic l1-ball r=2", lambda w: jnp.mean(jnp.logaddexp(0, -yd * (Xd @ w))), jc.projections.l1_ball(2.0), None, jnp.zeros(40)))
q4 = jnp.asarray(rng.standard_normal((30, 30))); q4 = q4 + q4.T
cases.append(("sphere quartic n=30", lambda x: x @ q4 @ x + jnp.sum(x ** 4), jc.projections.sphere(1.0), None, jnp.ones(30) / jnp.sqrt(30.0)))
import sys
if len(sys.argv) > 1:  # only the last four (nonconvex) cases
    cases = cases[-4:]
for name, f, P, bounds, x0 in cases:
    solver = ProjectedGradient(projection=P, max_steps=20000)
    prob = jc.Problem(lambda x, a, f=f: f(x), bounds=bounds)
    sol = jc.solve(prob, x0, solver)
    lo, hi = bounds if bounds else (-jnp.inf, jnp.inf)
    PP = (lambda x, P=P, lo=lo, hi=hi: jnp.clip(P(x) if P else x, lo, hi))
    ff = fista(f, PP, x0)
    print(f"{name:32s} SPG: {jc.Status(int(sol.status)).name:9s} f={float(sol.f):.10g} it={int(sol.stats.iterations)} ev={int(sol.stats.evaluations)} | FISTA: f={ff[0]:.10g} it={ff[1]} ev={ff[2]} stat={ff[3]:.1e}", flush=True)
