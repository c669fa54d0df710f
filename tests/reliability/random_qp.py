"""Random strictly convex QPs with feasible constraints, and an independent reference.

    minimise ½ xᵀQx + cᵀx  s.t.  A_eq x = b_eq,  A_in x <= b_in,  lower <= x <= upper

with Q = BBᵀ/n + I/2 (eigenvalues >= 1/2), a random point x_f strictly inside the bounds
that satisfies every constraint (b_eq = A_eq x_f, b_in = A_in x_f + slack, a third of
the slacks zero), bounds finite or infinite at random. Shapes are fixed (N, M_EQ, M_IN),
so one compiled solve serves every draw. `reference` solves the QP exactly by
enumerating active sets (NumPy, no jconstrain code) and `certify`s the answer (strict
KKT conditions, and SciPy's SLSQP finds nothing better): for a strictly convex QP the KKT
point is unique, and its multipliers are too under LICQ (generic for random data).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np

import jconstrain as jc

N, M_EQ, M_IN = 4, 1, 3


@dataclasses.dataclass(frozen=True)
class QP:
    """A batch (leading axis) or a single QP, as NumPy float64 arrays."""

    Q: np.ndarray
    c: np.ndarray
    A_eq: np.ndarray
    b_eq: np.ndarray
    A_in: np.ndarray
    b_in: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    x0: np.ndarray

    def data(self, dtype=jnp.float64) -> tuple:
        """(Q, c, A_eq, b_eq, A_in, b_in) as JAX arrays: the `args` of `PROBLEM`."""
        return tuple(jnp.asarray(a, dtype) for a in (self.Q, self.c, self.A_eq, self.b_eq, self.A_in, self.b_in))

    def member(self, i: int) -> "QP":
        return QP(*(getattr(self, f.name)[i] for f in dataclasses.fields(self)))


def random_qps(seed: int, batch: int, box_only: bool = False) -> QP:
    """`batch` random QPs from `seed` (with `box_only`, no eq/ineq rows: A = 0, b = 0 -
    the rows are then 0 = 0 and 0 <= 1, and callers use `BOX_PROBLEM`)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        B = rng.normal(size=(N, N))
        Q = B @ B.T / N + 0.5 * np.eye(N)
        c = rng.normal(size=N) * 2.0
        x_f = rng.uniform(-1.0, 1.0, N)
        lower = np.where(rng.random(N) < 0.6, x_f - rng.uniform(0.05, 1.0, N), -np.inf)
        upper = np.where(rng.random(N) < 0.6, x_f + rng.uniform(0.05, 1.0, N), np.inf)
        A_eq = rng.normal(size=(M_EQ, N))
        A_in = rng.normal(size=(M_IN, N))
        slack = np.where(rng.random(M_IN) < 1.0 / 3.0, 0.0, rng.uniform(0.0, 1.0, M_IN))
        b_eq, b_in = A_eq @ x_f, A_in @ x_f + slack
        if box_only:
            A_eq, b_eq, A_in, b_in = 0 * A_eq, 0 * b_eq, 0 * A_in, np.ones(M_IN)
        x0 = rng.uniform(-2.0, 2.0, N)
        out.append((Q, c, A_eq, b_eq, A_in, b_in, lower, upper, x0))
    return QP(*(np.stack(parts) for parts in zip(*out)))


@dataclasses.dataclass(frozen=True)
class Reference:
    x: np.ndarray
    eq: np.ndarray
    ineq: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def _inequality_rows(qp: QP, box_only: bool) -> tuple[np.ndarray, np.ndarray, list]:
    """All inequality rows as G x <= h: A_in (unless box_only), then -x <= -lower and
    x <= upper for the finite bounds; with each row's (kind, index)."""
    n = qp.Q.shape[0]
    rows, rhs, kinds = [], [], []
    if not box_only:
        for i in range(qp.A_in.shape[0]):
            rows.append(qp.A_in[i]), rhs.append(qp.b_in[i]), kinds.append(("ineq", i))
    for i in range(n):
        if np.isfinite(qp.lower[i]):
            rows.append(-np.eye(n)[i]), rhs.append(-qp.lower[i]), kinds.append(("lower", i))
        if np.isfinite(qp.upper[i]):
            rows.append(np.eye(n)[i]), rhs.append(qp.upper[i]), kinds.append(("upper", i))
    return np.asarray(rows).reshape(-1, n), np.asarray(rhs), kinds


def reference(qp: QP, box_only: bool = False, tol: float = 1e-10) -> Reference:
    """The exact solution of one QP by active-set enumeration, certified.

    For each set S of at most N - M_EQ inequality rows (`_inequality_rows`) whose rows,
    stacked under A_eq, are linearly independent, solve the equality QP with rows S
    active; the answer is the first S whose point satisfies every row and whose
    multipliers are >= 0. Sets of dependent rows are skipped: their KKT matrix is
    singular, and LAPACK may return a garbage point with huge multipliers of either
    sign instead of raising (a lower and an upper bound of the same variable, seed 1320).
    The point found must then pass `certify` (strict KKT conditions and an independent
    SciPy solve); a failure raises rather than hand a test a wrong reference.
    """
    n = qp.Q.shape[0]
    E = np.zeros((0, n)) if box_only else qp.A_eq
    e = np.zeros(0) if box_only else qp.b_eq
    G, h, kinds = _inequality_rows(qp, box_only)
    for size in range(0, n - E.shape[0] + 1):
        for S in itertools.combinations(range(len(kinds)), size):
            A = np.vstack([E, G[list(S)]])
            if np.linalg.matrix_rank(A) < A.shape[0]:
                continue
            b = np.concatenate([e, h[list(S)]])
            K = np.block([[qp.Q, A.T], [A, np.zeros((A.shape[0], A.shape[0]))]])
            sol = np.linalg.solve(K, np.concatenate([-qp.c, b]))
            x, mu = sol[:n], sol[n:]
            mu_G = mu[E.shape[0] :]
            if np.all(G @ x <= h + tol) and np.all(mu_G >= -tol):
                ineq, lower, upper = np.zeros(qp.A_in.shape[0]), np.zeros(n), np.zeros(n)
                for k, value in zip(S, mu_G):
                    kind, i = kinds[k]
                    {"ineq": ineq, "lower": lower, "upper": upper}[kind][i] = value
                ref = Reference(x=x, eq=mu[: E.shape[0]], ineq=ineq, lower=lower, upper=upper)
                certify(qp, ref, box_only)
                return ref
    raise AssertionError("no KKT point found: the generator made an infeasible or degenerate QP")


def certify(qp: QP, ref: Reference, box_only: bool = False, tol: float = 1e-9) -> None:
    """Raise AssertionError unless `ref` is the QP's solution.

    For a strictly convex QP the KKT conditions are sufficient, so check them strictly,
    each relative to the size of its terms: primal feasibility (`max_violation`), dual
    signs (ν, z_lower, z_upper >= 0), complementarity (ν_i · slack_i = 0), stationarity
    (`kkt_residual`). Independently, SciPy's SLSQP (no jconstrain code, no enumeration)
    from x0 must find no feasible point with a lower objective.
    """
    x = ref.x
    f = lambda z: 0.5 * z @ qp.Q @ z + qp.c @ z
    scale = max(1.0, np.max(np.abs(x)))
    assert max_violation(qp, x, box_only) <= tol * scale, "reference infeasible"
    signs = [ref.lower, ref.upper] + ([] if box_only else [ref.ineq])
    assert all(np.all(m >= -tol) for m in signs), "reference multiplier of the wrong sign"
    slacks = [x - qp.lower, qp.upper - x] + ([] if box_only else [qp.b_in - qp.A_in @ x])
    for m, slack in zip(signs, slacks):
        finite = np.isfinite(slack)
        assert np.all(np.abs(m[finite] * slack[finite]) <= tol * scale * max(1.0, np.max(np.abs(m)))), "not complementary"
    eq, ineq = (None, None) if box_only else (ref.eq, ref.ineq)
    assert kkt_residual(qp, x, eq, ineq, ref.lower, ref.upper, box_only) <= tol, "reference not stationary"
    other = scipy_solution(qp, box_only)
    if max_violation(qp, other, box_only) <= 1e-8:
        assert f(x) <= f(other) + 1e-8 * max(1.0, abs(f(other))), (
            f"SLSQP found f = {f(other)} below the reference's {f(x)}"
        )


def scipy_solution(qp: QP, box_only: bool = False) -> np.ndarray:
    """The QP solved by SciPy's SLSQP from x0 (tight tolerance, exact gradients)."""
    from scipy.optimize import Bounds, minimize

    constraints = []
    if not box_only:
        constraints = [
            {"type": "eq", "fun": lambda z: qp.A_eq @ z - qp.b_eq, "jac": lambda z: qp.A_eq},
            {"type": "ineq", "fun": lambda z: qp.b_in - qp.A_in @ z, "jac": lambda z: -qp.A_in},
        ]
    result = minimize(
        lambda z: 0.5 * z @ qp.Q @ z + qp.c @ z,
        np.clip(qp.x0, qp.lower, qp.upper),
        jac=lambda z: qp.Q @ z + qp.c,
        method="SLSQP",
        bounds=Bounds(qp.lower, qp.upper),
        constraints=constraints,
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return result.x


def kkt_residual(qp: QP, x, eq, ineq, lower, upper, box_only: bool = False) -> float:
    """||Qx + c + A_eqᵀλ + A_inᵀν - z_lower + z_upper||_∞ / max(1, ||Qx + c||_∞)."""
    x = np.asarray(x, np.float64)
    grad = qp.Q @ x + qp.c
    r = grad - np.asarray(lower, np.float64) + np.asarray(upper, np.float64)
    if not box_only:
        r = r + qp.A_eq.T @ np.asarray(eq, np.float64) + qp.A_in.T @ np.asarray(ineq, np.float64)
    return float(np.max(np.abs(r)) / max(1.0, np.max(np.abs(grad))))


def max_violation(qp: QP, x, box_only: bool = False) -> float:
    x = np.asarray(x, np.float64)
    parts = [np.maximum(qp.lower - x, 0.0), np.maximum(x - qp.upper, 0.0)]
    if not box_only:
        parts += [np.abs(qp.A_eq @ x - qp.b_eq), np.maximum(qp.A_in @ x - qp.b_in, 0.0)]
    return float(np.max(np.concatenate(parts)))


# ------------------------------------------------------------------ the problem, two ways


def _objective(z, d):
    Q, c = d[0], d[1]
    return 0.5 * z @ Q @ z + c @ z


def flat_problem(lower, upper) -> jc.Problem:
    """The QP on a flat x of shape (N,); args = `QP.data()`."""
    return jc.Problem(
        objective=_objective,
        eq=lambda z, d: d[2] @ z - d[3],
        ineq=lambda z, d: d[4] @ z - d[5],
        bounds=(lower, upper),
    )


def box_problem(lower, upper) -> jc.Problem:
    """The QP with bounds only (for ProjectedGradient); args = `QP.data()`."""
    return jc.Problem(objective=_objective, bounds=(lower, upper))


def to_dict(z):
    """x as a dict: {"u": z[:2], "v": z[2:] as a (1, 2) matrix} (keys in raveling order)."""
    return {"u": z[:2], "v": z[2:].reshape(1, 2)}


def from_dict(x):
    return jnp.concatenate([x["u"], x["v"].reshape(-1)])


def dict_problem(lower, upper) -> jc.Problem:
    """The same QP on x = {"u": (2,), "v": (1, 2)}, with a dict equality output and a
    tuple of inequality outputs shaped (2,) and (1,); bounds as dicts."""
    return jc.Problem(
        objective=lambda x, d: _objective(from_dict(x), d),
        eq=lambda x, d: {"e": d[2] @ from_dict(x) - d[3]},
        ineq=lambda x, d: ((d[4] @ from_dict(x) - d[5])[:2], (d[4] @ from_dict(x) - d[5])[2:]),
        bounds=(to_dict(lower), to_dict(upper)),
    )


def solver_batch(solver: jc.AbstractSolver, make_problem, dict_x: bool = False):
    """A jitted, vmapped solve over a batch: (data, lower, upper, x0) -> Solution."""

    def one(data, lower, upper, x0):
        x0 = to_dict(x0) if dict_x else x0
        return jc.solve(make_problem(lower, upper), x0, solver, args=data)

    return jax.jit(jax.vmap(one))
