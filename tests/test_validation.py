"""Bad input raises a clear ValueError/TypeError naming the argument, before compilation.

Value checks (non-finite x0, lower > upper) raise on concrete values; under jit the
solve reports NONFINITE / INFEASIBLE instead (tested in test_solve.py).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc
from jconstrain import _validation as validation
from jconstrain._problem import flatten

X0 = jnp.array([1.0, 2.0, 3.0])
DICT_X0 = {"a": jnp.zeros(2), "B": jnp.zeros((2, 2))}


def f(x, args):
    return jnp.sum(x**2)


def f_dict(x, args):
    return jnp.sum(x["a"] ** 2) + jnp.sum(x["B"] ** 2)


def solve(problem, x0=X0, **kwargs):
    return jc.solve(problem, x0, jc.Penalty(), **kwargs)


class NoFloats(eqx.Module):
    n: jax.Array
    act: callable = jax.nn.relu


# ------------------------------------------------------------------ the problem


def test_problem_of_wrong_type():
    with pytest.raises(TypeError, match="problem"):
        jc.solve(f, X0, jc.Penalty())
    with pytest.raises(TypeError, match="problem"):
        jc.solve({"objective": f}, X0, jc.Penalty())


@pytest.mark.parametrize("bad", [3.0, "f", None])
def test_objective_not_callable(bad):
    with pytest.raises(TypeError, match="objective"):
        solve(jc.Problem(objective=bad))


@pytest.mark.parametrize("name", ["eq", "ineq"])
def test_constraint_not_callable(name):
    with pytest.raises(TypeError, match=f"problem.{name}"):
        solve(jc.Problem(objective=f, **{name: jnp.zeros(2)}))


def test_objective_not_scalar():
    with pytest.raises(ValueError, match="objective.*scalar"):
        solve(jc.Problem(objective=lambda x, a: x**2))
    with pytest.raises(ValueError, match="objective"):
        solve(jc.Problem(objective=lambda x, a: jnp.sum(x**2, keepdims=True)))


@pytest.mark.parametrize(
    "returns",
    [
        lambda x, a: "f",
        lambda x, a: None,
        lambda x, a: (jnp.sum(x), jnp.sum(x)),
        lambda x, a: jnp.sum(x > 0),  # an integer array
        lambda x, a: jnp.all(x > 0),  # a bool array
        lambda x, a: jnp.sum(x) + 1j,  # complex
        lambda x, a: [object()],
    ],
    ids=["string", "None", "tuple", "int-array", "bool-array", "complex", "object"],
)
def test_objective_returning_a_non_float_array(returns):
    with pytest.raises(TypeError, match="objective"):
        solve(jc.Problem(objective=returns))


@pytest.mark.parametrize("name", ["eq", "ineq"])
@pytest.mark.parametrize(
    "returns",
    [
        lambda x, a: None,
        lambda x, a: "c",
        lambda x, a: {"c": "c"},
        lambda x, a: jnp.arange(2),  # an integer array
        lambda x, a: (x[0] - 1.0, jnp.arange(2)),  # one integer leaf among float leaves
        lambda x, a: x > 0,  # a bool array
        lambda x, a: x + 1j,
    ],
    ids=["None", "string", "dict-of-string", "int-array", "int-leaf", "bool-array", "complex"],
)
def test_constraint_returning_a_non_float_array(name, returns):
    with pytest.raises(TypeError, match=f"problem.{name}"):
        solve(jc.Problem(objective=f, **{name: returns}))


def test_errors_raise_under_jit_too():
    """Structure errors do not depend on values: they raise while tracing under jit."""
    with pytest.raises(ValueError, match="objective"):
        jax.jit(lambda x: solve(jc.Problem(objective=lambda x, a: x), x))(X0)
    with pytest.raises(TypeError, match="problem.eq"):
        jax.jit(lambda x: solve(jc.Problem(objective=f, eq=lambda x, a: jnp.arange(2)), x))(X0)
    with pytest.raises(ValueError, match="bound"):
        jax.jit(lambda x, lo: solve(jc.Problem(objective=f, bounds=(lo, None)), x))(X0, jnp.zeros(2))


# ------------------------------------------------------------------ x0


@pytest.mark.parametrize(
    "x0",
    [
        jnp.array([1, 2]),
        {"a": jnp.zeros(2), "b": jnp.array([1, 2], dtype=jnp.int32)},
        [1, 2],
        {"a": "zero"},
        {"a": True},
        jnp.array([1.0 + 1j]),
        np.array([1, 2]),
    ],
    ids=["int-array", "int-leaf", "python-ints", "string", "bool", "complex", "numpy-ints"],
)
def test_x0_with_non_float_leaves(x0):
    with pytest.raises(TypeError, match="x0"):
        solve(jc.Problem(objective=lambda x, a: 0.0), x0)


@pytest.mark.parametrize(
    "x0",
    [{}, None, (), NoFloats(jnp.arange(3))],
    ids=["empty-dict", "None", "empty-tuple", "module-without-floats"],
)
def test_x0_without_float_leaves(x0):
    with pytest.raises(ValueError, match="x0"):
        solve(jc.Problem(objective=lambda x, a: 0.0), x0)


@pytest.mark.parametrize(
    "x0",
    [jnp.array([1.0, jnp.nan]), {"a": jnp.zeros(2), "B": jnp.full((2, 2), jnp.inf)}, np.array([-np.inf])],
    ids=["nan", "inf-in-dict", "numpy-minus-inf"],
)
def test_x0_not_finite(x0):
    with pytest.raises(ValueError, match="x0"):
        solve(jc.Problem(objective=lambda x, a: 0.0), x0)


# ------------------------------------------------------------------ bounds


@pytest.mark.parametrize(
    "bounds, error, match",
    [
        ((jnp.zeros(2), None), ValueError, "lower bound"),  # shape mismatch
        ((None, jnp.zeros((3, 1))), ValueError, "upper bound"),  # (3, 1) and (3,) broadcast to (3, 3), not to x's (3,)
        ((None, [0.0, 1.0, 2.0]), ValueError, "upper bound"),  # a list is a pytree of 3 leaves, x0 has 1
        ((jnp.array([0.0, jnp.nan, 0.0]), None), ValueError, "lower bound.*NaN"),
        ((jnp.array([0.0, 5.0, 0.0]), 1.0), ValueError, "bounds.*lower > upper"),
        ((2.0, 1.0), ValueError, "bounds.*lower > upper"),
        ((0.0,), TypeError, "bounds"),
        (0.0, TypeError, "bounds"),
        (("low", None), TypeError, "lower bound"),
        ((None, 1.0 + 1j), TypeError, "upper bound"),
    ],
    ids=[
        "shape", "shape-2d", "structure", "nan", "lower>upper", "lower>upper-scalars",
        "one-sided-tuple", "not-a-pair", "string", "complex",
    ],
)
def test_bad_bounds(bounds, error, match):
    with pytest.raises(error, match=match):
        solve(jc.Problem(objective=f, bounds=bounds))


@pytest.mark.parametrize(
    "lower",
    [
        {"a": jnp.zeros(2)},  # missing leaf
        {"a": jnp.zeros(2), "B": jnp.zeros(2), "c": 0.0},  # extra leaf
        [jnp.zeros(2), jnp.zeros((2, 2))],  # a list, not a dict
        {"a": jnp.zeros(3), "B": 0.0},  # wrong shape in one leaf
    ],
    ids=["missing", "extra", "list", "leaf-shape"],
)
def test_bounds_of_the_wrong_structure(lower):
    with pytest.raises(ValueError, match="lower bound"):
        solve(jc.Problem(objective=f_dict, bounds=(lower, None)), DICT_X0)


def test_valid_input_passes():
    """lower == upper is a (degenerate) box, not an error; ±inf and one-sided bounds are fine."""
    for bounds in [(1.0, 1.0), (-jnp.inf, jnp.inf), (None, jnp.array([jnp.inf, 0.0, 1.0])), None]:
        validation.check_problem(jc.Problem(objective=f, eq=lambda x, a: x[:2], bounds=bounds), X0, None)
    validation.check_problem(jc.Problem(objective=f_dict, bounds=({"a": 0.0, "B": -1.0}, 2.0)), DICT_X0, None)
    validation.check_options(jc.Penalty(), np.int64(3), np.bool_(True))
    assert validation.normalise_x0({"a": 1.0})["a"].dtype == jnp.float64  # Python floats become arrays


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "max_steps, error", [(-1, ValueError), (2.5, TypeError), (True, TypeError), ("3", TypeError)]
)
def test_bad_max_steps(max_steps, error):
    with pytest.raises(error, match="max_steps"):
        solve(jc.Problem(objective=f), max_steps=max_steps)


@pytest.mark.parametrize("verbose", ["yes", 1, None, jnp.asarray(True)])
def test_bad_verbose(verbose):
    with pytest.raises(TypeError, match="verbose"):
        solve(jc.Problem(objective=f), verbose=verbose)


@pytest.mark.parametrize("solver", [None, "Penalty", jc.Penalty])
def test_bad_solver(solver):
    with pytest.raises(TypeError, match="solver"):
        jc.solve(jc.Problem(objective=f), X0, solver)


def test_warm_start_of_the_wrong_structure():
    problem = jc.Problem(objective=f, ineq=lambda x, a: x[0] - 1.0)
    with pytest.raises(ValueError, match="warm_start"):
        solve(problem, warm_start={"rho": 1.0})
    with pytest.raises(ValueError, match="warm_start"):
        solve(problem, warm_start=(jnp.zeros(3),))
    # The state of the same solver on a problem with other sizes: structure matches, shapes not.
    other_flat, other_z0 = flatten(jc.Problem(objective=f), jnp.zeros(5), None)
    other_state = jc.Penalty().init(other_flat, other_z0, None, None)
    with pytest.raises(ValueError, match="warm_start"):
        solve(problem, warm_start=other_state)
