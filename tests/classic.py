"""PyGRANSO's classic examples as `jc.Problem`s, with independently computed references.

Shared by `tests/test_sqp_classic.py` and the notebooks. Every builder is deterministic
(fixed seeds, numpy generators) and returns a `Classic`: the problem, a start point, the
reference optimal value and whatever data the reference needs. References never use
jconstrain: they are analytic (Rosenbrock, eigenvalue problems) or come from a
different method written here in numpy/SciPy (LP iteration for dictionary learning,
a dual certificate for robust PCA, ADMM + active-set KKT solve for the TV-LASSO).

Problems (PyGRANSO / GRANSO demo names in brackets):

- `rosenbrock`            [Rosenbrock]   min 8|x1² - x2| + (1 - x1)²  s.t. √2 x1 <= 1, 2 x2 <= 1.
- `rayleigh`              [sphere manifold]  min xᵀAx  s.t. xᵀx = 1            (f* = λ_min(A)).
- `trace`                 [trace optimisation]  min -tr(XᵀAX)  s.t. XᵀX = I   (f* = -Σ top-d λ).
- `dictionary_learning`   [dictionary learning]  min ||qᵀY||_1 / m  s.t. ||q||² = 1.
- `robust_pca`            [robust PCA]   min ||M||_* + λ||S||_1  s.t. M + S = Y.
- `tv_lasso`              [generalised LASSO]  min ½||Ax - b||² + λ||Dx||_1 (unconstrained).
- `spectral_abscissa_data` [GRANSO demo 4 / eigenvalue optimisation]: data for
  min max Im Λ(A + BXC)  s.t. α(A + BXC) + 1 <= 0 (benchmarks/spectral_abscissa.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

import jconstrain as jc


@dataclasses.dataclass(frozen=True)
class Classic:
    """A classic example: `problem`, start `x0`, reference optimum `f_ref`, and `data`
    (numpy arrays the problem closes over and the reference was computed from)."""

    name: str
    problem: jc.Problem
    x0: Any
    f_ref: float
    data: dict = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        return self.name


# ------------------------------------------------------------------ nonsmooth Rosenbrock

ROSENBROCK_F_STAR = (1.0 - 1.0 / math.sqrt(2.0)) ** 2
ROSENBROCK_X_STAR = np.array([1.0 / math.sqrt(2.0), 0.5])


def _rosenbrock_f(x, args=None):
    return 8.0 * jnp.abs(x[0] ** 2 - x[1]) + (1.0 - x[0]) ** 2


def _rosenbrock_ineq(x, args=None):
    return jnp.stack([math.sqrt(2.0) * x[0] - 1.0, 2.0 * x[1] - 1.0])


def rosenbrock_starts(k: int, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """k start points, uniform in [-5, 5]² (fixed seed)."""
    return np.random.default_rng(seed).uniform(-5.0, 5.0, size=(k, 2)).astype(dtype)


def rosenbrock(seed: int = 0, dtype=np.float64) -> Classic:
    """PyGRANSO's nonsmooth Rosenbrock: min 8|x1² - x2| + (1 - x1)² s.t. √2 x1 <= 1, 2 x2 <= 1.

    Both constraints are active at x* = (1/√2, 1/2), which lies on the kink x2 = x1²:
    f* = (1 - 1/√2)².
    """
    problem = jc.Problem(objective=_rosenbrock_f, ineq=_rosenbrock_ineq)
    return Classic(
        "rosenbrock", problem, jnp.asarray(rosenbrock_starts(1, seed, dtype)[0]), ROSENBROCK_F_STAR,
        {"x_star": ROSENBROCK_X_STAR},
    )


def rosenbrock_violation(x) -> np.ndarray:
    """Max violation of the two inequalities (any leading batch shape)."""
    x = np.asarray(x, np.float64)
    c = np.stack([math.sqrt(2.0) * x[..., 0] - 1.0, 2.0 * x[..., 1] - 1.0], axis=-1)
    return np.max(np.maximum(c, 0.0), axis=-1)


# ------------------------------------------------------------------ eigenvalue problems


def _symmetric(n: int, rng: np.random.Generator) -> np.ndarray:
    A = rng.standard_normal((n, n))
    return (A + A.T) / 2.0


def rayleigh(n: int = 300, seed: int = 0) -> Classic:
    """Rayleigh quotient on the sphere: min xᵀAx s.t. xᵀx - 1 = 0, A = (G + Gᵀ)/2 with G
    standard normal. f* = λ_min(A) (numpy.linalg.eigvalsh). PyGRANSO's sphere example
    maximises (min -xᵀAx); this is the same problem for -A.

    x0: a standard normal vector normalised to the sphere (feasible start).
    """
    rng = np.random.default_rng(seed)
    A = _symmetric(n, rng)
    x0 = rng.standard_normal(n)
    x0 /= np.linalg.norm(x0)
    Aj = jnp.asarray(A)
    problem = jc.Problem(
        objective=lambda x, a: x @ (Aj @ x),
        eq=lambda x, a: jnp.reshape(x @ x - 1.0, (1,)),
    )
    return Classic(f"rayleigh-n{n}", problem, jnp.asarray(x0), float(np.linalg.eigvalsh(A)[0]), {"A": A})


def trace(n: int = 30, d: int = 2, seed: int = 0) -> Classic:
    """Trace optimisation with orthonormal columns: min -tr(XᵀAX) s.t. XᵀX - I = 0.

    X is n x d; the equality is the full d x d matrix XᵀX - I, as in PyGRANSO (for d >= 2
    its off-diagonal entries appear twice, so the constraint Jacobian is rank-deficient).
    f* = -(sum of the d largest eigenvalues of A). x0: Q factor of a Gaussian n x d matrix.
    """
    rng = np.random.default_rng(seed)
    A = _symmetric(n, rng)
    X0, _ = np.linalg.qr(rng.standard_normal((n, d)))
    Aj = jnp.asarray(A)
    eye = jnp.eye(d)
    problem = jc.Problem(
        objective=lambda X, a: -jnp.trace(X.T @ (Aj @ X)),
        eq=lambda X, a: X.T @ X - eye,
    )
    f_ref = -float(np.sum(np.linalg.eigvalsh(A)[-d:]))
    return Classic(f"trace-n{n}-d{d}", problem, jnp.asarray(X0), f_ref, {"A": A})


# ------------------------------------------------------------------ dictionary learning


def _l1_lp_step(Y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """argmin_q ||Yᵀq||_1 s.t. rᵀq = 1, as the LP min 1ᵀt s.t. -t <= Yᵀq <= t (HiGHS)."""
    from scipy.optimize import linprog

    n, m = Y.shape
    c = np.concatenate([np.zeros(n), np.ones(m)])
    eye = np.eye(m)
    A_ub = np.block([[Y.T, -eye], [-Y.T, -eye]])
    b_ub = np.zeros(2 * m)
    A_eq = np.concatenate([r, np.zeros(m)])[None, :]
    res = linprog(
        c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=[(None, None)] * n + [(0, None)] * m,
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"linprog failed: {res.message}")
    return res.x[:n]


def dl_objective_np(q: np.ndarray, Y: np.ndarray) -> float:
    return float(np.sum(np.abs(q @ Y)) / Y.shape[1])


def dl_local_minimum(Y: np.ndarray, r: np.ndarray, iters: int = 50) -> np.ndarray:
    """The local minimiser of ||qᵀY||_1 on the unit sphere reached from r, by the LP
    iteration q ← argmin{||Yᵀq||_1 : rᵀq = 1}, r ← q/||q|| (Qu, Sun & Wright).

    F(q) = ||Yᵀq||_1 is convex and 1-homogeneous, so F(q_{k+1}/||q_{k+1}||) <= F(r_k):
    the iteration descends, and a local minimiser on the sphere is a fixed point. The
    fixed point is a vertex where qᵀy_j = 0 for n - 1 columns j of Y; the result is
    polished to machine precision as the unit null vector of those columns.
    """
    n = Y.shape[0]
    r = r / np.linalg.norm(r)
    for _ in range(iters):
        q = _l1_lp_step(Y, r)
        q_new = q / np.linalg.norm(q)
        if np.linalg.norm(q_new - r) <= 1e-12:
            r = q_new
            break
        r = q_new
    # Polish: the n - 1 columns with the smallest |qᵀy_j| span r's orthogonal complement.
    zeros = np.argsort(np.abs(r @ Y))[: n - 1]
    _, _, Vt = np.linalg.svd(Y[:, zeros].T)
    q = Vt[-1] * np.sign(Vt[-1] @ r)
    if dl_objective_np(q, Y) <= dl_objective_np(r, Y):
        r = q
    return r


def dictionary_learning(n: int = 10, m: int = 300, theta: float = 0.3, seed: int = 0) -> Classic:
    """Orthogonal dictionary learning (one column): min ||qᵀY||_1 / m s.t. qᵀq - 1 = 0.

    Y = Q0 X with Q0 orthogonal (QR of a Gaussian) and X Bernoulli(θ)-Gaussian. The
    minimisers are near ±Q0[:, i] (qᵀY ≈ X[i], sparse). `f_ref` is the best local
    minimum over the 2n starts ±Q0[:, i], each refined by `dl_local_minimum`;
    `data["local_minima"]` (2n x n) and `data["local_values"]` hold all of them.
    x0: a normalised Gaussian vector.
    """
    rng = np.random.default_rng(seed)
    Q0, _ = np.linalg.qr(rng.standard_normal((n, n)))
    X = rng.standard_normal((n, m)) * (rng.uniform(size=(n, m)) < theta)
    Y = Q0 @ X
    x0 = rng.standard_normal(n)
    x0 /= np.linalg.norm(x0)
    minima = np.array([dl_local_minimum(Y, s * Q0[:, i]) for i in range(n) for s in (1.0, -1.0)])
    values = np.array([dl_objective_np(q, Y) for q in minima])
    Yj = jnp.asarray(Y)
    problem = jc.Problem(
        objective=lambda q, a: jnp.sum(jnp.abs(q @ Yj)) / m,
        eq=lambda q, a: jnp.reshape(q @ q - 1.0, (1,)),
    )
    return Classic(
        f"dictionary-learning-n{n}-m{m}", problem, jnp.asarray(x0), float(np.min(values)),
        {"Y": Y, "Q0": Q0, "local_minima": minima, "local_values": values},
    )


# ------------------------------------------------------------------ robust PCA


def _soft(Z: np.ndarray, tau: float) -> np.ndarray:
    return np.sign(Z) * np.maximum(np.abs(Z) - tau, 0.0)


def rpca_objective_np(M: np.ndarray, S: np.ndarray, lam: float) -> float:
    return float(np.sum(np.linalg.svd(M, compute_uv=False)) + lam * np.sum(np.abs(S)))


def rpca_certificate(L0: np.ndarray, S0: np.ndarray, lam: float) -> dict:
    """A dual certificate that the planted split (L0, S0) solves robust PCA.

    The dual of min ||M||_* + λ||S||_1 s.t. M + S = Y is max <Λ, Y> s.t. ||Λ||_2 <= 1,
    ||Λ||_∞ <= λ. With L0 = UΣVᵀ, T its tangent space and Ω the support of S0, any Λ with
        P_T(Λ) = UVᵀ,  Λ_Ω = λ sign(S0_Ω),  ||P_T⊥(Λ)||_2 < 1,  max_{Ω^c} |Λ| < λ
    is dual feasible with <Λ, Y> = ||L0||_* + λ||S0||_1, so (L0, S0) is optimal (and,
    the inequalities being strict, the unique optimum). Λ is the least-norm solution of
    the two linear conditions; returns the margins ||P_T⊥(Λ)||_2 and max_{Ω^c}|Λ|/λ
    (both must be < 1) and the residual of the linear conditions.
    """
    p, q = L0.shape
    U, s, Vt = np.linalg.svd(L0)
    r = int(np.sum(s > 1e-10 * s[0]))
    U, V = U[:, :r], Vt[:r].T
    PU, PV = U @ U.T, V @ V.T
    PT = lambda Z: PU @ Z + Z @ PV - PU @ Z @ PV
    on = S0 != 0
    basis = np.eye(p * q).reshape(p * q, p, q)
    K = np.array([np.concatenate([PT(e).ravel(), e[on]]) for e in basis]).T
    rhs = np.concatenate([(U @ V.T).ravel(), lam * np.sign(S0[on])])
    Lam = np.linalg.lstsq(K, rhs, rcond=None)[0].reshape(p, q)
    return {
        "residual": float(np.max(np.abs(K @ Lam.ravel() - rhs))),
        "spectral_margin": float(np.linalg.norm(Lam - PT(Lam), 2)),
        "offsupport_margin": float(np.max(np.abs(Lam[~on]), initial=0.0) / lam),
        "Lambda": Lam,
    }


def robust_pca(shape: tuple[int, int] = (10, 10), density: float = 0.1, seed: int = 7) -> Classic:
    """Robust PCA: min ||M||_* + λ||S||_1 s.t. M + S - Y = 0, λ = 1/√max(shape).

    Y = L0 + S0 with L0 = a·uvᵀ, u and v random sign vectors (rank 1, maximally incoherent)
    and S0 sparse (Bernoulli(density) support, values ±U[1, 3]). For the default seed
    `rpca_certificate` proves the planted split optimal, so f_ref = ||L0||_* + λ||S0||_1
    exactly (the builder raises if the certificate fails). Variables
    x = {"M": ..., "S": ...}; x0 = {"M": 0, "S": 0}.
    """
    rng = np.random.default_rng(seed)
    p, q = shape
    u, v = rng.choice([-1.0, 1.0], size=p), rng.choice([-1.0, 1.0], size=q)
    L0 = rng.uniform(1.0, 2.0) * np.outer(u, v)
    support = rng.uniform(size=shape) < density
    S0 = support * rng.choice([-1.0, 1.0], size=shape) * rng.uniform(1.0, 3.0, size=shape)
    Y = L0 + S0
    lam = 1.0 / math.sqrt(max(shape))
    cert = rpca_certificate(L0, S0, lam)
    if not (cert["residual"] < 1e-10 and cert["spectral_margin"] < 1 and cert["offsupport_margin"] < 1):
        raise ValueError(f"robust_pca(seed={seed}): the planted split is not certified optimal: {cert}")
    Yj = jnp.asarray(Y)

    def objective(x, a):
        return jnp.sum(jnp.linalg.svd(x["M"], compute_uv=False)) + lam * jnp.sum(jnp.abs(x["S"]))

    problem = jc.Problem(objective=objective, eq=lambda x, a: x["M"] + x["S"] - Yj)
    x0 = {"M": jnp.zeros(shape), "S": jnp.zeros(shape)}
    return Classic(
        f"robust-pca-{p}x{q}", problem, x0, rpca_objective_np(L0, S0, lam),
        {"Y": Y, "L0": L0, "S0": S0, "lam": lam, "certificate": cert},
    )


# ------------------------------------------------------------------ TV-LASSO


def difference_matrix(n: int) -> np.ndarray:
    """The (n-1) x n first-difference matrix, (Dx)_i = x_{i+1} - x_i."""
    return np.eye(n, k=1)[:-1] - np.eye(n)[:-1]


def tv_objective_np(x: np.ndarray, A: np.ndarray, b: np.ndarray, lam: float) -> float:
    D = difference_matrix(A.shape[1])
    return float(0.5 * np.sum((A @ x - b) ** 2) + lam * np.sum(np.abs(D @ x)))


def tv_lasso_reference(A: np.ndarray, b: np.ndarray, lam: float, iters: int = 200_000, tol: float = 1e-13):
    """min ½||Ax - b||² + λ||Dx||_1 in two independent stages, numpy only:

    1. ADMM on z = Dx: x ← (AᵀA + ρDᵀD)⁻¹(Aᵀb + ρDᵀ(z - u)), z ← soft_{λ/ρ}(Dx + u),
       u ← u + Dx - z, until the residuals fall below tol.
    2. Active-set polish: with Z = {i : z_i = 0} and s = sign(Dx) off Z, solve the KKT
       system of min ½||Ax - b||² + λ sᵀD_{¬Z}x s.t. D_Z x = 0 exactly, and keep it if it
       certifies optimality (multipliers of D_Z in [-λ, λ], signs unchanged).

    Returns (x, info) with info["certified"] whether stage 2 verified the KKT conditions.
    """
    m, n = A.shape
    D = difference_matrix(n)
    rho = 1.0
    K = A.T @ A + rho * D.T @ D
    Kinv = np.linalg.inv(K)
    Atb = A.T @ b
    z = np.zeros(n - 1)
    u = np.zeros(n - 1)
    for k in range(iters):
        x = Kinv @ (Atb + rho * D.T @ (z - u))
        Dx = D @ x
        z_new = _soft(Dx + u, lam / rho)
        u += Dx - z_new
        dual = rho * np.linalg.norm(z_new - z)
        z = z_new
        if np.linalg.norm(Dx - z) <= tol and dual <= tol:
            break
    info = {"admm_iterations": k + 1, "certified": False}
    Z = z == 0.0
    s = np.sign(z)
    DZ, DN = D[Z], D[~Z]
    kz = DZ.shape[0]
    KKT = np.block([[A.T @ A, DZ.T], [DZ, np.zeros((kz, kz))]])
    rhs = np.concatenate([Atb - lam * DN.T @ s[~Z], np.zeros(kz)])
    sol = np.linalg.lstsq(KKT, rhs, rcond=None)[0]
    x_pol, w = sol[:n], sol[n:]
    # Optimality: Aᵀ(Ax - b) + λ Dᵀg = 0 with g_i = s_i off Z and g_i = w_i/λ on Z,
    # and those subgradient entries must lie in [-1, 1].
    Dx_pol = D @ x_pol
    certified = (
        np.all(np.abs(w) <= lam * (1 + 1e-10))
        and np.all(np.sign(Dx_pol[~Z]) == s[~Z])
        and np.allclose(Dx_pol[Z], 0.0, atol=1e-12)
    )
    if certified and tv_objective_np(x_pol, A, b, lam) <= tv_objective_np(x, A, b, lam) + 1e-14:
        x = x_pol
    info["certified"] = bool(certified)
    info["zeros"] = int(kz)
    return x, info


def tv_lasso(n: int = 30, m: int = 40, lam: float = 1.0, noise: float = 0.1, seed: int = 0) -> Classic:
    """Total-variation LASSO (unconstrained, nonsmooth): min ½||Ax - b||² + λ||Dx||_1.

    A m x n Gaussian / √m; b = A x_true + noise with x_true piecewise constant (4 pieces).
    Reference from `tv_lasso_reference` (ADMM + certified active-set KKT solve).
    x0 = 0.
    """
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n)) / math.sqrt(m)
    x_true = np.repeat(rng.uniform(-2.0, 2.0, size=4), -(-n // 4))[:n]
    b = A @ x_true + noise * rng.standard_normal(m)
    x_ref, info = tv_lasso_reference(A, b, lam)
    Aj, bj, Dj = jnp.asarray(A), jnp.asarray(b), jnp.asarray(difference_matrix(n))
    problem = jc.Problem(
        objective=lambda x, a: 0.5 * jnp.sum((Aj @ x - bj) ** 2) + lam * jnp.sum(jnp.abs(Dj @ x))
    )
    return Classic(
        f"tv-lasso-n{n}", problem, jnp.zeros(n), tv_objective_np(x_ref, A, b, lam),
        {"A": A, "b": b, "lam": lam, "x_ref": x_ref, "x_true": x_true, **info},
    )


# ------------------------------------------------------------------ spectral abscissa (GRANSO demo 4)


def spectral_abscissa_data(n: int = 50, p: int = 10, q: int = 10, gain: float = 1.5, seed: int = 0) -> dict:
    """Data for GRANSO's eigenvalue-optimisation demo:
    min_X max Im Λ(A + BXC)  s.t.  α(A + BXC) + 1 <= 0  (α: spectral abscissa), X p x q.

    Built around a planted feasible point so that the instance is certainly feasible:
    S = G/√n shifted to α(S) = -1.5, B (n x p) and C (q x n) Gaussian / √n, K (p x q)
    Gaussian, A = S - gain·BKC. Then X_feas = gain·K gives A + BX_feasC = S (feasible with
    slack 0.5, objective max Im Λ(S)), while X = 0 is unstable (α(A) ≈ 0.9 for the defaults).
    """
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((n, n)) / math.sqrt(n)
    S -= (np.max(np.linalg.eigvals(S).real) + 1.5) * np.eye(n)
    B = rng.standard_normal((n, p)) / math.sqrt(n)
    C = rng.standard_normal((q, n)) / math.sqrt(n)
    K = rng.standard_normal((p, q))
    A = S - gain * B @ K @ C
    return {"A": A, "B": B, "C": C, "margin": 1.0, "X_feas": gain * K,
            "f_feas": float(np.max(np.linalg.eigvals(S).imag))}
