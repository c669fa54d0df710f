"""Stepwise primal-dual training under constraints (minibatches, optax-style).

For a model with parameters θ, a loss f(θ; batch) and constraints c_E(θ; batch) = 0,
c_I(θ; batch) <= 0 estimated on each minibatch, every step does

    θ_{t+1} = θ_t + primal_update(∇_θ P(θ_t; λ_t, ν_t))         (any optax optimiser)
    λ_{t+1} = λ_t + η Δ_t(e_E),   ν_{t+1} = max(0, ν_t + η Δ_t(e_I))   (dual ascent, PI)

from one evaluation of f and c on the batch (simultaneous updates). As in Cooper
(Gallego-Posada et al.), the *formulation* -- which primal objective P is descended and
which dual error e is ascended -- is separate from the *update scheme* -- the primal
optax optimiser and the dual PI controller. The formulation math is
`jconstrain.formulations`', shared with the `jc.AugmentedLagrangian` and `jc.Penalty`
solvers:

- "lagrangian":           P = f + λ·c_E + ν·c_I;            e_E = ĉ_E,  e_I = ĉ_I
- "augmented_lagrangian": P = f + λ·c_E + ρ/2 ||c_E||²
                                + 1/(2ρ) Σ (max(0, ν + ρ c_I)² - ν²);
                                                             e_E = ĉ_E,  e_I = max(ĉ_I, -ν/ρ)
                          (e is ∂L_ρ/∂(λ, ν), so η = ρ, no PI, is the method of
                          multipliers: ν_{t+1} = max(0, ν_t + ρ ĉ_I))
- "quadratic_penalty":    P = f + ρ/2 (||c_E||² + ||max(c_I, 0)||²); no multipliers.

Multipliers are constants in P (no gradient flows into them).

**Proxy constraints** (Cotter et al. 2019): the primal step differentiates the values c
the user returns in `Constraints.eq` / `.ineq` -- a smooth surrogate, e.g. a mean
sigmoid for a rate -- while the dual step uses ĉ = `Constraints.eq_true` / `.ineq_true`,
the true (possibly non-differentiable) values, e.g. the rate itself; without them
ĉ = c. Constraint values may be any pytrees of arrays; the multipliers have the same
structure.

**Dual update: νPI** (Sohrabi et al. 2024, "On PI controllers for updating Lagrange
multipliers in constrained optimization"). With gains (κ_p, κ_i) and EMA coefficient
κ_ν, per multiplier:

    ξ_t = κ_ν ξ_{t-1} + (1 - κ_ν) e_t,     ξ_{-1} = e_0,
    Δ_t = κ_i e_t + κ_p (ξ_t - ξ_{t-1}).

(κ_p, κ_i) = (0, 1) is projected gradient ascent; κ_p > 0 adds the proportional term,
which damps the oscillation of the multipliers around their equilibrium; the first
step is always plain gradient ascent (η κ_i e_0). `rho` and `dual_lr` may be optax
schedules (functions of the step count).

Typical use:

    tx = jc.train.constrained(optax.adam(1e-3), "lagrangian", dual_lr=0.05, pi_gains=(1.0, 1.0))
    state = tx.init(params, num_ineq=1)
    step = eqx.filter_jit(lambda p, s, b: jc.train.step(tx, s, p, loss_and_constraints, b))
    for batch in batches:
        params, state, info = step(params, state, batch)

with `loss_and_constraints(params, batch) -> (loss, jc.train.Constraints(ineq=..., ineq_true=...))`.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PyTree

from jconstrain import formulations
from jconstrain._checks import check_range

__all__ = [
    "ConstrainedOptimizer",
    "ConstrainedState",
    "Constraints",
    "StepInfo",
    "constrained",
    "step",
]

Formulation = Literal["lagrangian", "quadratic_penalty", "augmented_lagrangian"]
FORMULATIONS = ("lagrangian", "quadratic_penalty", "augmented_lagrangian")
ScalarOrSchedule = float | Callable[[Array], Array]


class Constraints(eqx.Module):
    """Constraint values on one batch: `eq == 0`, `ineq <= 0`, each a pytree of arrays.

    `eq` / `ineq` are differentiated for the primal step (a smooth surrogate where the
    true constraint is not differentiable); `eq_true` / `ineq_true`, when given, are the
    values the dual step uses (the true constraint; never differentiated). They must have
    the structure and shapes of `eq` / `ineq`.
    """

    eq: PyTree[Array] | None = None
    ineq: PyTree[Array] | None = None
    eq_true: PyTree[Array] | None = None
    ineq_true: PyTree[Array] | None = None


class ConstrainedState(eqx.Module):
    """The primal optimiser's state, the multipliers and the dual controller's memory.

    `lam` (like the eq values) and `nu` (like the ineq values, >= 0) are the current
    multipliers; `xi_eq` / `xi_ineq` the νPI smoothed errors; `count` the steps taken.
    """

    primal: PyTree
    lam: PyTree[Array] | None
    nu: PyTree[Array] | None
    xi_eq: PyTree[Array] | None
    xi_ineq: PyTree[Array] | None
    count: Int[Array, ""]


class StepInfo(NamedTuple):
    """What a step saw (at the parameters before the step) and the updated multipliers.

    loss: f on the batch; objective: the primal objective P; eq / ineq: the true
    constraint values used by the dual step; violation: max(|ĉ_E|, max(ĉ_I, 0));
    lam / nu: the multipliers after the step; rho: the penalty used; aux: the user's aux.
    """

    loss: Float[Array, ""]
    objective: Float[Array, ""]
    eq: PyTree[Array] | None
    ineq: PyTree[Array] | None
    violation: Float[Array, ""]
    lam: PyTree[Array] | None
    nu: PyTree[Array] | None
    rho: Float[Array, ""]
    aux: Any


def _value(x: ScalarOrSchedule | None, count: Array, dtype: Any) -> Array:
    return jnp.asarray(x(count) if callable(x) else x, dtype)


def _ravel(tree: PyTree[Array] | None, dtype: Any) -> Float[Array, " m"]:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.zeros((0,), dtype)
    return jnp.concatenate([jnp.ravel(jnp.asarray(leaf, dtype)) for leaf in leaves])


def _example(spec: int | PyTree | None, dtype: Any, name: str) -> PyTree | None:
    """Zeros shaped like `spec`: an int (a vector of that many constraints) or an example
    pytree of arrays / `jax.ShapeDtypeStruct`s (only shapes are used)."""
    if spec is None:
        return None
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0:
            raise ValueError(f"{name} must be >= 0, got {spec}.")
        return jnp.zeros((spec,), dtype) if spec else None
    leaves = jax.tree_util.tree_leaves(spec)
    if not all(hasattr(leaf, "shape") or isinstance(leaf, (float, int)) for leaf in leaves):
        raise TypeError(f"{name} must be an int or a pytree of arrays, got {spec!r}.")
    return jax.tree_util.tree_map(lambda leaf: jnp.zeros(jnp.shape(leaf), dtype), spec)


def _params_dtype(params: PyTree) -> Any:
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(params) if eqx.is_inexact_array(leaf)]
    if not leaves:
        raise ValueError("params must contain at least one floating-point array.")
    return leaves[0].dtype


def _check_like(values: PyTree | None, like: PyTree | None, name: str) -> None:
    """Raise a clear error unless `values` has the structure and shapes of `like`."""
    if like is None:
        if jax.tree_util.tree_leaves(values):
            raise ValueError(f"{name} constraints were returned but the state has none; pass them to `init`.")
        return
    if values is None:
        raise ValueError(f"the state has {name} multipliers but the function returned no {name} constraints.")
    s_values, s_like = jax.tree_util.tree_structure(values), jax.tree_util.tree_structure(like)
    if s_values != s_like:
        raise ValueError(f"{name} constraints have structure {s_values}; the state expects {s_like}.")
    for v, m in zip(jax.tree_util.tree_leaves(values), jax.tree_util.tree_leaves(like)):
        if jnp.shape(v) != jnp.shape(m):
            raise ValueError(f"{name} constraint shape {jnp.shape(v)} does not match the multiplier's {jnp.shape(m)}.")


class ConstrainedOptimizer(eqx.Module):
    """A primal optax optimiser plus a formulation and a νPI dual update (see the module
    docstring). Build it with `constrained(...)`.

    Float hyperparameters are ordinary fields (traceable, vmappable); `primal` and
    `formulation` are static.
    """

    primal: optax.GradientTransformation = eqx.field(static=True)
    formulation: str = eqx.field(static=True)
    rho: ScalarOrSchedule
    dual_lr: ScalarOrSchedule | None
    pi_gains: tuple[float, float]
    pi_ema: float

    # -- state --------------------------------------------------------------------------

    def init(
        self,
        params: PyTree,
        *,
        num_eq: int | None = None,
        num_ineq: int | None = None,
        eq: PyTree | None = None,
        ineq: PyTree | None = None,
    ) -> ConstrainedState:
        """The initial state: multipliers 0, the primal optimiser's own init.

        Give the constraints either as counts (`num_eq`, `num_ineq`: vectors of that
        length) or as example values (`eq`, `ineq`: pytrees of arrays or
        `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape`), whose structure the
        multipliers take. Multipliers have the dtype of the parameters.
        """
        dtype = _params_dtype(params)
        if num_eq is not None and eq is not None:
            raise ValueError("give either num_eq or eq, not both.")
        if num_ineq is not None and ineq is not None:
            raise ValueError("give either num_ineq or ineq, not both.")
        lam = _example(num_eq if eq is None else eq, dtype, "num_eq" if eq is None else "eq")
        nu = _example(num_ineq if ineq is None else ineq, dtype, "num_ineq" if ineq is None else "ineq")
        return ConstrainedState(
            primal=self.primal.init(eqx.filter(params, eqx.is_inexact_array)),
            lam=lam,
            nu=nu,
            xi_eq=lam,
            xi_ineq=nu,
            count=jnp.asarray(0, jnp.int32),
        )

    # -- the formulation ------------------------------------------------------------------

    def objective(self, loss: Array, constraints: Constraints, state: ConstrainedState) -> Array:
        """The primal objective P(θ) of the formulation (multipliers held constant)."""
        constraints = _conform(constraints, state)
        dtype = jnp.result_type(loss)
        c_eq, c_ineq = _ravel(constraints.eq, dtype), _ravel(constraints.ineq, dtype)
        lam = jax.lax.stop_gradient(_ravel(state.lam, dtype))
        nu = jax.lax.stop_gradient(_ravel(state.nu, dtype))
        rho = _value(self.rho, state.count, dtype)
        if self.formulation == "lagrangian":
            terms = formulations.lagrangian_terms(c_eq, c_ineq, lam, nu)
        elif self.formulation == "quadratic_penalty":
            terms = formulations.quadratic_penalty_terms(c_eq, c_ineq, rho)
        else:
            terms = formulations.augmented_lagrangian_terms(c_eq, c_ineq, lam, nu, rho)
        return loss + terms

    def dual_errors(self, constraints: Constraints, state: ConstrainedState) -> tuple[PyTree | None, PyTree | None]:
        """(e_E, e_I): the ascent directions of the multipliers, from the true values."""
        eq_true, ineq_true = _true_values(constraints)
        if self.formulation != "augmented_lagrangian" or ineq_true is None:
            return eq_true, ineq_true
        rho = _value(self.rho, state.count, _dtype_of(state.nu))
        e_ineq = jax.tree_util.tree_map(
            lambda c, nu: formulations.complementarity_violation(jnp.asarray(c, nu.dtype), nu, rho),
            ineq_true,
            state.nu,
        )
        return eq_true, e_ineq

    # -- the update scheme -------------------------------------------------------------------

    def dual_update(self, constraints: Constraints, state: ConstrainedState) -> ConstrainedState:
        """One νPI step of the multipliers (none for "quadratic_penalty"); count += 1."""
        constraints = _conform(constraints, state)
        count = state.count + 1
        if self.formulation == "quadratic_penalty":
            return eqx.tree_at(lambda s: s.count, state, count)
        e_eq, e_ineq = self.dual_errors(constraints, state)
        first = state.count == 0
        kp, ki = self.pi_gains
        ema = self.pi_ema

        def controller(e, xi_prev, mult):
            e = jnp.asarray(e, mult.dtype)
            xi_prev = jnp.where(first, e, xi_prev)
            xi = ema * xi_prev + (1 - ema) * e
            delta = ki * e + kp * (xi - xi_prev)
            eta = self._dual_lr(state.count, mult.dtype)
            return mult + eta * delta, xi

        def update(errors, xis, mults, project):
            if mults is None:
                return None, None
            pairs = jax.tree_util.tree_map(controller, errors, xis, mults)
            outer = jax.tree_util.tree_structure(mults)
            inner = jax.tree_util.tree_structure((0, 0))
            new, xi = jax.tree_util.tree_transpose(outer, inner, pairs)
            if project:
                new = jax.tree_util.tree_map(lambda v: jnp.maximum(v, 0), new)
            return new, xi

        lam, xi_eq = update(e_eq, state.xi_eq, state.lam, project=False)
        nu, xi_ineq = update(e_ineq, state.xi_ineq, state.nu, project=True)
        return ConstrainedState(primal=state.primal, lam=lam, nu=nu, xi_eq=xi_eq, xi_ineq=xi_ineq, count=count)

    def _dual_lr(self, count: Array, dtype: Any) -> Array:
        if self.dual_lr is None:  # η = ρ (augmented Lagrangian: the method of multipliers)
            return _value(self.rho, count, dtype)
        return _value(self.dual_lr, count, dtype)

    def update(
        self, grads: PyTree, state: ConstrainedState, params: PyTree, constraints: Constraints
    ) -> tuple[PyTree, ConstrainedState]:
        """Optax-style: primal updates from `grads` (= ∇_θ P, see `objective`) and the dual
        step from `constraints` (measured at `params`). Apply with `optax.apply_updates`
        (or `eqx.apply_updates` where params is an equinox Module with non-array leaves)."""
        diff = eqx.filter(params, eqx.is_inexact_array)
        updates, primal_state = self.primal.update(grads, state.primal, diff)
        state = self.dual_update(constraints, state)
        return updates, eqx.tree_at(lambda s: s.primal, state, primal_state)

    def step(
        self,
        state: ConstrainedState,
        params: PyTree,
        fn: Callable[..., Any],
        batch: Any,
        *,
        has_aux: bool = False,
    ) -> tuple[PyTree, ConstrainedState, StepInfo]:
        """One primal-dual step on `batch`; see `step`."""
        diff, static = eqx.partition(params, eqx.is_inexact_array)

        def primal_objective(diff):
            out = fn(eqx.combine(diff, static), batch)
            (loss, constraints), aux = (out[:2], out[2]) if has_aux else (out, None)
            if not isinstance(constraints, Constraints):
                raise TypeError(
                    "fn must return (loss, jc.train.Constraints(...))"
                    + (" and aux" if has_aux else "")
                    + f"; got constraints of type {type(constraints).__name__}."
                )
            loss = jnp.asarray(loss)
            if loss.shape != ():
                raise ValueError(f"the loss must be a scalar, got shape {loss.shape}.")
            return self.objective(loss, constraints, state), (loss, constraints, aux)

        (value, (loss, constraints, aux)), grads = jax.value_and_grad(primal_objective, has_aux=True)(diff)
        updates, new_state = self.update(grads, state, params, constraints)
        params = eqx.apply_updates(params, updates)
        eq_true, ineq_true = _true_values(constraints)
        dtype = jnp.result_type(loss)
        info = StepInfo(
            loss=loss,
            objective=value,
            eq=eq_true,
            ineq=ineq_true,
            violation=_max_violation(eq_true, ineq_true, dtype),
            lam=new_state.lam,
            nu=new_state.nu,
            rho=_value(self.rho, state.count, dtype),
            aux=aux,
        )
        return params, new_state, info


def _conform(constraints: Constraints, state: ConstrainedState) -> Constraints:
    """The constraint values shaped like the state's multipliers (a scalar constraint
    counted by `num_eq=1` / `num_ineq=1` becomes shape (1,)); raise a clear error where
    they do not match."""
    fields = {"eq": state.lam, "ineq": state.nu, "eq_true": state.lam, "ineq_true": state.nu}
    values = {}
    for name, like in fields.items():
        value = getattr(constraints, name)
        if value is not None and like is not None:
            value = _scalars_as_vectors(value, like)
        if value is not None or name in ("eq", "ineq"):
            _check_like(value, like, name)
        values[name] = value
    return Constraints(**values)


def _scalars_as_vectors(values: PyTree, like: PyTree) -> PyTree:
    """Each scalar leaf of `values` reshaped to (1,) where its multiplier has shape (1,)."""
    if jax.tree_util.tree_structure(values) != jax.tree_util.tree_structure(like):
        return values
    fix = lambda v, m: jnp.reshape(v, (1,)) if jnp.shape(v) == () and jnp.shape(m) == (1,) else v
    return jax.tree_util.tree_map(fix, values, like)


def _true_values(constraints: Constraints) -> tuple[PyTree | None, PyTree | None]:
    """(ĉ_E, ĉ_I): the `*_true` values where given, else the primal ones; no gradient."""
    eq = constraints.eq if constraints.eq_true is None else constraints.eq_true
    ineq = constraints.ineq if constraints.ineq_true is None else constraints.ineq_true
    return jax.lax.stop_gradient(eq), jax.lax.stop_gradient(ineq)


def _dtype_of(tree: PyTree | None) -> Any:
    leaves = jax.tree_util.tree_leaves(tree)
    return leaves[0].dtype if leaves else jnp.float32


def _max_violation(eq: PyTree | None, ineq: PyTree | None, dtype: Any) -> Array:
    c_eq, c_ineq = _ravel(eq, dtype), _ravel(ineq, dtype)
    return jnp.maximum(jnp.max(jnp.abs(c_eq), initial=0.0), jnp.max(c_ineq, initial=0.0)).astype(dtype)


def constrained(
    primal: optax.GradientTransformation,
    formulation: Formulation = "lagrangian",
    *,
    rho: ScalarOrSchedule = 1.0,
    dual_lr: ScalarOrSchedule | None = None,
    pi_gains: tuple[float, float] = (0.0, 1.0),
    pi_ema: float = 0.0,
) -> ConstrainedOptimizer:
    """A constrained optimiser: `primal` (any optax optimiser) for the parameters, a
    formulation, and νPI dual ascent for the multipliers (see the module docstring).

    Args:
        primal: the optax optimiser of the parameters, e.g. `optax.adam(1e-3)`.
        formulation: "lagrangian", "augmented_lagrangian" or "quadratic_penalty".
        rho: the penalty ρ > 0 of the augmented-Lagrangian and quadratic-penalty
            formulations (a float or an optax schedule of the step count).
        dual_lr: the dual step size η > 0 (float or schedule); None (the default) takes
            η = ρ: for "augmented_lagrangian" the method of multipliers, for
            "lagrangian" gradient ascent with step ρ (1.0 by default, in the
            constraints' units: pass a smaller one for noisy minibatch constraints).
        pi_gains: (κ_p, κ_i), the proportional and integral gains of νPI; (0, 1) is
            projected gradient ascent, κ_p > 0 damps oscillations.
        pi_ema: κ_ν in [0, 1), the EMA coefficient of νPI's smoothed error.
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}.")
    if not (hasattr(primal, "init") and hasattr(primal, "update")):
        raise TypeError(f"primal must be an optax GradientTransformation, got {type(primal).__name__}.")
    # Schedules (callables) and traced values are not judged; concrete numbers are.
    check_range("rho", rho, 0.0, lo_open=True)
    check_range("dual_lr", dual_lr, 0.0, lo_open=True)
    if len(tuple(pi_gains)) != 2:
        raise ValueError(f"pi_gains must be a pair (kp, ki), got {pi_gains!r}.")
    check_range("pi_gains[0] (kp)", pi_gains[0], 0.0)
    check_range("pi_gains[1] (ki)", pi_gains[1], 0.0)
    check_range("pi_ema", pi_ema, 0.0, 1.0, hi_open=True)
    return ConstrainedOptimizer(
        primal=primal,
        formulation=formulation,
        rho=rho,
        dual_lr=dual_lr,
        pi_gains=tuple(pi_gains),
        pi_ema=pi_ema,
    )


def step(
    tx: ConstrainedOptimizer,
    state: ConstrainedState,
    params: PyTree,
    fn: Callable[..., Any],
    batch: Any,
    *,
    has_aux: bool = False,
) -> tuple[PyTree, ConstrainedState, StepInfo]:
    """One simultaneous primal-dual step on `batch`.

    `fn(params, batch)` returns `(loss, Constraints(...))` (plus `aux` with
    `has_aux=True`). The parameters descend the formulation's primal objective P
    (differentiating the `eq` / `ineq` values), the multipliers ascend with νPI on the
    true values (`eq_true` / `ineq_true`), both from this one evaluation at `params`.
    Only the inexact-array leaves of `params` (e.g. of an equinox Module) are trained.

    Pure: `eqx.filter_jit` it (or `jax.jit` with `tx` and `fn` closed over).

    Returns:
        (new params, new state, `StepInfo` of this step).
    """
    return tx.step(state, params, fn, batch, has_aux=has_aux)
