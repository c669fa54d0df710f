"""Random strictly convex QPs with feasible constraints, and an independent reference.

    minimise ½ xᵀQx + cᵀx  s.t.  A_eq x = b_eq,  A_in x <= b_in,  lower <= x <= upper

with Q = BBᵀ/n + I/2 (eigenvalues >= 1/2), a random point x_f strictly inside the bounds
that satisfies every constraint (b_eq = A_eq x_f, b_in = A_in x_f + slack, a third of
the slacks zero), bounds finite or infinite at random. Shapes are fixed (N, M_EQ, M_IN),
so one compiled solve serves every draw. `reference` solves the QP exactly by
enumerating active sets (NumPy, no jconstrain code): for a strictly convex QP the KKT
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


def reference(qp: QP, box_only: bool = False, tol: float = 1e-10) -> Reference:
    """The exact solution of one QP by active-set enumeration.

    Inequality rows G x <= h are A_in (unless box_only), -x <= -lower and x <= upper
    (finite bounds only). For each set S of at most N - M_EQ rows, solve the equality
    QP with rows S active; the answer is the S whose point satisfies every row and whose
    multipliers are >= 0.
    """
    n = qp.Q.shape[0]
    E = np.zeros((0, n)) if box_only else qp.A_eq
    e = np.zeros(0) if box_only else qp.b_eq
    rows, rhs, kinds = [], [], []
    if not box_only:
        for i in range(qp.A_in.shape[0]):
            rows.append(qp.A_in[i]), rhs.append(qp.b_in[i]), kinds.append(("ineq", i))
    for i in range(n):
        if np.isfinite(qp.lower[i]):
            rows.append(-np.eye(n)[i]), rhs.append(-qp.lower[i]), kinds.append(("lower", i))
        if np.isfinite(qp.upper[i]):
            rows.append(np.eye(n)[i]), rhs.append(qp.upper[i]), kinds.append(("upper", i))
    G, h = np.asarray(rows).reshape(-1, n), np.asarray(rhs)
    for size in range(0, n - E.shape[0] + 1):
        for S in itertools.combinations(range(len(rows)), size):
            A = np.vstack([E, G[list(S)]])
            b = np.concatenate([e, h[list(S)]])
            K = np.block([[qp.Q, A.T], [A, np.zeros((A.shape[0], A.shape[0]))]])
            try:
                sol = np.linalg.solve(K, np.concatenate([-qp.c, b]))
            except np.linalg.LinAlgError:
                continue
            x, mu = sol[:n], sol[n:]
            mu_G = mu[E.shape[0] :]
            if np.all(G @ x <= h + tol) and np.all(mu_G >= -tol):
                ineq, lower, upper = np.zeros(qp.A_in.shape[0]), np.zeros(n), np.zeros(n)
                for k, value in zip(S, mu_G):
                    kind, i = kinds[k]
                    {"ineq": ineq, "lower": lower, "upper": upper}[kind][i] = value
                return Reference(x=x, eq=mu[: E.shape[0]], ineq=ineq, lower=lower, upper=upper)
    raise AssertionError("no KKT point found: the generator made an infeasible or degenerate QP")


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
