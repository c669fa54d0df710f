"""Fuzzing the front door: malformed problems, x0, bounds and options raise only
TypeError/ValueError, with a message naming the argument, raised by jconstrain's own
checks (never an exception from deep inside JAX), before anything is compiled.

Hypothesis draws a base call (x as a flat vector or a dict of arrays; one of the four
solvers) and breaks exactly one thing in it: x0, the objective, a constraint function,
the bounds, `max_steps`, `verbose`, the solver, one of the solver's hyperparameters,
`warm_start`, or ProjectedGradient's projection.
"""

from __future__ import annotations

import os
import re
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jconstrain as jc
from jconstrain import _validation as validation

PACKAGE = os.path.dirname(jc.__file__)
SOLVER_TYPES = {
    "SQP": jc.SQP,
    "AugmentedLagrangian": jc.AugmentedLagrangian,
    "Penalty": jc.Penalty,
    "ProjectedGradient": jc.ProjectedGradient,
}


def _sum_squares(x, a):
    return sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(x))


def _first(x):
    return jax.tree_util.tree_leaves(x)[0].ravel()


BASES = {
    "flat": jnp.zeros(3),
    "dict": {"a": jnp.zeros(2), "B": jnp.zeros((2, 2))},
}


def _base_problem(solver_name: str, **changes) -> dict:
    """The parts of a valid call; ProjectedGradient's problem has no eq/ineq."""
    parts = dict(objective=_sum_squares, eq=lambda x, a: _first(x)[:1] - 1.0, ineq=lambda x, a: _first(x)[1:2] - 2.0)
    parts["bounds"] = (-5.0, 5.0)
    if solver_name == "ProjectedGradient":
        parts["eq"] = parts["ineq"] = None
    parts.update(changes)
    return parts


class Call:
    """One call of jc.solve, with the argument name its error must mention."""

    def __init__(self, base, solver_name, name, *, x0=BASES, problem=None, solver=None, kwargs=None):
        self.base, self.solver_name, self.name = base, solver_name, name
        self.x0 = BASES[base] if x0 is BASES else x0  # (None is a bad x0 to try)
        self.problem = problem if problem is not None else _base_problem(solver_name)
        self.solver = solver
        self.kwargs = kwargs or {}

    def __repr__(self):
        return f"Call({self.base}, {self.solver_name}, breaks {self.name!r})"

    def run(self):
        problem = jc.Problem(**self.problem) if isinstance(self.problem, dict) else self.problem
        solver = self.solver() if callable(self.solver) and not isinstance(self.solver, jc.AbstractSolver) else self.solver
        if solver is None and "solver" not in self.kwargs:
            solver = SOLVER_TYPES[self.solver_name]()
        solver = self.kwargs.pop("solver", solver)
        return jc.solve(problem, self.x0, solver, **self.kwargs)


# ------------------------------------------------------------------ bad values

BAD_DTYPES = [jnp.int32, jnp.int64, jnp.uint8, jnp.bool_, jnp.complex64, jnp.complex128]
NOT_ARRAYS = ["zero", None, object(), b"bytes"]


@st.composite
def bad_x0(draw, base):
    kind = draw(st.sampled_from(["dtype", "python", "nonfinite", "empty"]))
    if kind == "dtype":
        dtype = draw(st.sampled_from(BAD_DTYPES))
        shape = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
        leaf = jnp.zeros(shape, dtype)
    elif kind == "python":
        leaf = draw(st.sampled_from(NOT_ARRAYS + [True, 3, [1, 2], 1 + 2j]))
    elif kind == "nonfinite":
        size = draw(st.integers(1, 4))
        leaf = np.zeros(size)
        leaf[draw(st.integers(0, size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        leaf = draw(st.sampled_from([leaf, jnp.asarray(leaf)]))
    else:
        return draw(st.sampled_from([{}, (), []]))
    if base == "dict":
        return {"a": jnp.zeros(2), "B": leaf}
    return leaf


def _raises_inside(kind):
    """Functions that fail when traced at x0 (user bugs), by kind."""
    return {
        "string-index": lambda x, a: x["missing"].sum() if not isinstance(x, dict) else x[0].sum(),
        "shape-mismatch": lambda x, a: jnp.sum(_first(x) @ jnp.ones(7)),
        "python-if": lambda x, a: jnp.sum(_first(x)) if _first(x)[0] > 0 else 0.0,
        "raise": lambda x, a: (_ for _ in ()).throw(KeyError("boom")),
        "args-none": lambda x, a: jnp.sum(_first(x) * a["scale"]),
    }[kind]


FAULTY_KINDS = ["string-index", "shape-mismatch", "python-if", "raise", "args-none"]


@st.composite
def bad_objective(draw):
    kind = draw(st.sampled_from(["not-callable", "returns", "arity", "raises"]))
    if kind == "not-callable":
        return draw(st.sampled_from([3.0, "f", jnp.zeros(2), [_sum_squares], None]))
    if kind == "arity":
        return draw(st.sampled_from([lambda x: jnp.sum(x), lambda: 0.0, lambda x, a, b: 0.0]))
    if kind == "raises":
        return _raises_inside(draw(st.sampled_from(FAULTY_KINDS)))
    size = draw(st.integers(1, 3))
    returns = draw(
        st.sampled_from(
            [
                lambda x, a: jnp.zeros(size) + jnp.sum(_first(x)),  # not a scalar
                lambda x, a: jnp.zeros((1,) * size),
                lambda x, a: "f",
                lambda x, a: None,
                lambda x, a: (jnp.sum(_first(x)), jnp.sum(_first(x))),
                lambda x, a: jnp.sum(_first(x) > 0),  # integer
                lambda x, a: jnp.all(_first(x) > 0),  # bool
                lambda x, a: jnp.sum(_first(x)) + 1j,
                lambda x, a: [object()],
            ]
        )
    )
    return returns


@st.composite
def bad_constraint(draw):
    kind = draw(st.sampled_from(["not-callable", "returns", "arity", "raises"]))
    if kind == "not-callable":
        return draw(st.sampled_from([3.0, "c", jnp.zeros(2), (lambda x, a: x,)]))
    if kind == "arity":
        return draw(st.sampled_from([lambda x: x, lambda: 0.0, lambda x, a, b: x]))
    if kind == "raises":
        return _raises_inside(draw(st.sampled_from(FAULTY_KINDS)))
    return draw(
        st.sampled_from(
            [
                lambda x, a: None,
                lambda x, a: "c",
                lambda x, a: {"c": "c"},
                lambda x, a: jnp.arange(2),
                lambda x, a: (_first(x)[0], jnp.arange(2)),
                lambda x, a: _first(x) > 0,
                lambda x, a: _first(x) + 1j,
                lambda x, a: [object()],
            ]
        )
    )


@st.composite
def bad_bounds(draw, base):
    """(bounds, name regex)."""
    kind = draw(st.sampled_from(["not-a-pair", "side", "lower>upper"]))
    if kind == "not-a-pair":
        return draw(st.sampled_from([0.0, (0.0,), (0.0, 1.0, 2.0), "bounds", [None]])), "bounds"
    if kind == "lower>upper":
        lo = draw(st.floats(-10, 10))
        hi = draw(st.floats(-20, 10).filter(lambda h: h < lo))
        return (lo, hi), "bounds"
    side = draw(st.sampled_from([0, 1]))
    bad = draw(
        st.sampled_from(
            ["string", "complex", "nan", "shape", "structure"]
        )
    )
    if bad == "string":
        value = "low"
    elif bad == "complex":
        value = 1.0 + 1j
    elif bad == "nan":
        value = jnp.full((3,), jnp.nan) if base == "flat" else {"a": jnp.array([0.0, jnp.nan]), "B": 0.0}
    elif bad == "shape":
        n = draw(st.integers(2, 5).filter(lambda k: k != 3))
        value = jnp.zeros((n,)) if base == "flat" else {"a": jnp.zeros(n + 1), "B": 0.0}
    else:
        value = {"a": 0.0} if base == "flat" else [jnp.zeros(2), jnp.zeros((2, 2))]
    pair = [None, None]
    pair[side] = value
    return tuple(pair), "lower bound" if side == 0 else "upper bound"


def bad_field(solver_name):
    """(field, bad value) of one hyperparameter of this solver."""
    import dataclasses

    fields = [f for f in dataclasses.fields(SOLVER_TYPES[solver_name]) if f.default is not dataclasses.MISSING]
    floats = [f.name for f in fields if isinstance(f.default, float)]
    ints = [f.name for f in fields if isinstance(f.default, int) and not isinstance(f.default, bool)]
    bad_float = st.sampled_from(["x", None, float("nan"), jnp.ones(2), 1 + 1j, True, jnp.asarray(1, jnp.complex64)])
    bad_int = st.sampled_from([-1, -5, 2.5, "3", True, None])
    choices = [st.tuples(st.sampled_from(floats), bad_float), st.tuples(st.sampled_from(ints), bad_int)]
    tols = [name for name in floats if name.endswith("_tol")]
    choices.append(st.tuples(st.sampled_from(tols), st.floats(-1e3, -1e-12)))
    if solver_name in ("SQP", "Penalty", "AugmentedLagrangian"):
        opt = "memory" if solver_name == "SQP" else "optimizer"
        choices.append(st.tuples(st.just(opt), st.sampled_from([0, -2, "adam", optax.adam] if opt == "memory" else ["adam", 3, optax.adam])))
    return st.one_of(choices)


@st.composite
def malformed_call(draw):
    base = draw(st.sampled_from(list(BASES)))
    solver_name = draw(st.sampled_from(list(SOLVER_TYPES)))
    target = draw(
        st.sampled_from(
            ["x0", "objective", "eq", "ineq", "bounds", "max_steps", "verbose", "solver", "field", "warm_start", "projection"]
        )
    )
    if target in ("eq", "ineq") and solver_name == "ProjectedGradient":
        solver_name = "Penalty"
    if target == "projection" and solver_name != "ProjectedGradient":
        solver_name = "ProjectedGradient"
    if target == "x0":
        return Call(base, solver_name, "x0", x0=draw(bad_x0(base)))
    if target == "objective":
        return Call(base, solver_name, "objective", problem=_base_problem(solver_name, objective=draw(bad_objective())))
    if target in ("eq", "ineq"):
        return Call(base, solver_name, f"problem.{target}", problem=_base_problem(solver_name, **{target: draw(bad_constraint())}))
    if target == "bounds":
        bounds, name = draw(bad_bounds(base))
        return Call(base, solver_name, name, problem=_base_problem(solver_name, bounds=bounds))
    if target == "max_steps":
        value = draw(st.one_of(st.integers(-1000, -1), st.floats(0.5, 10.5), st.sampled_from([True, "3", 2.0, None and 0])))
        if value is None:
            value = -1
        return Call(base, solver_name, "max_steps", kwargs={"max_steps": value})
    if target == "verbose":
        return Call(base, solver_name, "verbose", kwargs={"verbose": draw(st.sampled_from(["yes", 1, 0.0, None, jnp.asarray(True)]))})
    if target == "solver":
        value = draw(st.sampled_from([None, "SQP", jc.SQP, 3, optax.adam(1e-3)]))
        return Call(base, solver_name, "solver", kwargs={"solver": value})
    if target == "field":
        field, value = draw(bad_field(solver_name))
        solver_type = SOLVER_TYPES[solver_name]
        # validation says "Penalty.opt_tol ..."; ProjectedGradient's own check "jc.ProjectedGradient: `memory` ..."
        name = rf"{solver_name}\b.*\b{field}\b"
        return Call(base, solver_name, name, solver=lambda: solver_type(**{field: value}))
    if target == "warm_start":
        value = draw(st.sampled_from([{"rho": 1.0}, (jnp.zeros(3),), jnp.zeros(3), "state"]))
        return Call(base, solver_name, "warm_start", kwargs={"warm_start": value})
    # projection
    value = draw(
        st.sampled_from(
            [
                3,
                "simplex",
                lambda x: x["nope"] if not isinstance(x, dict) else x[0],  # raises on x0
                lambda x, y: x,  # wrong arity
                lambda x: jnp.zeros(7),  # wrong structure / shape
            ]
        )
    )
    return Call(base, "ProjectedGradient", "projection", solver=lambda: jc.ProjectedGradient(projection=value))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(call=malformed_call())
def test_malformed_input_raises_a_clear_error_from_jconstrain(call):
    with pytest.raises((TypeError, ValueError)) as info:
        call.run()
    message = str(info.value)
    assert re.search(call.name, message), (call, message)
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    assert frame.filename.startswith(PACKAGE), (call, frame.filename, message)


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("solver_name", list(SOLVER_TYPES))
def test_the_unbroken_base_calls_pass_the_checks(base, solver_name):
    """The base calls the fuzzer breaks are themselves valid (so each error above comes
    from the one thing broken): every check passes on them."""
    solver = SOLVER_TYPES[solver_name]()
    validation.check_options(solver, None, False)
    x0 = validation.normalise_x0(BASES[base])
    validation.check_problem(jc.Problem(**_base_problem(solver_name)), x0, None)
