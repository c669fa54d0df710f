"""jconstrain._problem: Problem, the flat view, and the violation measures."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconstrain as jc
from jconstrain._problem import (
    bound_residuals,
    flatten,
    inequalities_with_bounds,
    l1_violation,
    max_violation,
    split_bound_multipliers,
    variables,
)

X0 = {"a": jnp.array([1.0, -2.0, 3.0]), "B": jnp.arange(4.0).reshape(2, 2)}


def objective(x, args):
    return jnp.sum(x["a"] ** 2) + jnp.sum(x["B"])


def eq(x, args):
    return {"s": jnp.sum(x["a"]) - 1.0, "m": x["B"][0] - args}


def ineq(x, args):
    return (x["B"] - 5.0, x["a"][:1])


class Net(eqx.Module):
    w: jax.Array
    b: jax.Array
    act: callable = jax.nn.relu
    depth: int = 3


def test_problem_holds_the_users_own_objects():
    bounds = (0.0, {"a": jnp.ones(3), "B": jnp.inf})
    p = jc.Problem(objective=objective, eq=eq, ineq=ineq, bounds=bounds)
    assert p.objective is objective
    assert p.eq is eq
    assert p.ineq is ineq
    assert p.bounds is bounds
    q = jc.Problem(objective)
    assert q.eq is None and q.ineq is None and q.bounds is None


def test_flatten_sizes_and_roundtrip():
    args = jnp.array([0.5, 0.25])
    p = jc.Problem(objective=objective, eq=eq, ineq=ineq)
    flat, z0 = flatten(p, X0, args)
    assert (flat.n, flat.m_eq, flat.m_ineq) == (7, 3, 5)
    assert z0.shape == (7,) and z0.dtype == jnp.float64
    back = flat.to_pytree(z0)
    assert set(back) == {"a", "B"}
    for k in X0:
        np.testing.assert_array_equal(back[k], X0[k])
    np.testing.assert_allclose(flat.objective(z0, args), objective(X0, args))
    assert flat.objective(z0, args).shape == ()
    c_eq = flat.eq(z0, args)
    assert c_eq.shape == (3,)
    # Multipliers unravel to pytrees shaped like the constraint outputs.
    lam = flat.unravel_eq(jnp.arange(3.0))
    assert jax.tree_util.tree_structure(lam) == jax.tree_util.tree_structure(eq(X0, args))
    assert lam["s"].shape == () and lam["m"].shape == (2,)
    nu = flat.unravel_ineq(jnp.arange(5.0))
    assert isinstance(nu, tuple) and nu[0].shape == (2, 2) and nu[1].shape == (1,)
    # The flat values are exactly the user's, raveled in leaf order.
    want_eq = np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(eq(X0, args))])
    np.testing.assert_allclose(c_eq, want_eq)
    want_ineq = np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(ineq(X0, args))])
    np.testing.assert_allclose(flat.ineq(z0, args), want_ineq)
    assert not flat.has_bounds
    assert np.all(np.isneginf(flat.lower)) and np.all(np.isposinf(flat.upper))


def test_flatten_without_constraints():
    flat, z0 = flatten(jc.Problem(objective), X0, None)
    assert flat.m_eq == 0 and flat.m_ineq == 0
    assert flat.eq(z0, None).shape == (0,) and flat.ineq(z0, None).shape == (0,)
    assert flat.unravel_eq is None and flat.unravel_ineq is None


@pytest.mark.parametrize(
    "bounds, lower, upper",
    [
        ((0.0, 2.0), [0.0] * 7, [2.0] * 7),
        ((None, 2.0), [-np.inf] * 7, [2.0] * 7),
        ((-jnp.inf, jnp.inf), [-np.inf] * 7, [np.inf] * 7),
        (
            ({"a": jnp.array([0.0, -1.0, -np.inf]), "B": -3.0}, {"a": jnp.inf, "B": jnp.array([[1.0, 2.0], [3.0, 4.0]])}),
            [0.0, -1.0, -np.inf, -3.0, -3.0, -3.0, -3.0],
            [np.inf, np.inf, np.inf, 1.0, 2.0, 3.0, 4.0],
        ),
    ],
    ids=["scalars", "one-sided", "infinite", "pytrees"],
)
def test_bound_vectors(bounds, lower, upper):
    flat, _ = flatten(jc.Problem(objective, bounds=bounds), X0, None)
    assert flat.has_bounds
    # Leaf order of a dict is sorted by key: B before a.
    order = np.concatenate([np.arange(3, 7), np.arange(0, 3)])
    np.testing.assert_array_equal(flat.lower, np.asarray(lower)[order])
    np.testing.assert_array_equal(flat.upper, np.asarray(upper)[order])


def test_module_x0_variables_and_static_leaves():
    net = Net(jnp.ones((2, 3)), jnp.zeros(2))
    params, static = variables(net)
    assert len(jax.tree_util.tree_leaves(params)) == 2
    flat, z0 = flatten(jc.Problem(lambda m, a: jnp.sum(m.act(m.w)) + m.depth), net, None)
    assert flat.n == 8
    back = flat.to_pytree(z0 + 1.0)
    assert isinstance(back, Net)
    assert back.act is jax.nn.relu and back.depth == 3 and isinstance(back.depth, int)
    np.testing.assert_array_equal(back.w, 2.0 * np.ones((2, 3)))
    np.testing.assert_allclose(flat.objective(z0, None), 6.0 + 3)


def test_module_bounds_like_x_or_like_its_variables():
    net = Net(jnp.ones((2, 3)), jnp.zeros(2))
    like_x = Net(jnp.full((2, 3), -1.0), jnp.asarray(-2.0), jax.nn.relu, 3)
    like_params = eqx.filter(Net(jnp.full((2, 3), -1.0), jnp.full((2,), -2.0)), eqx.is_inexact_array)
    for lower in (like_x, like_params):
        flat, _ = flatten(jc.Problem(lambda m, a: jnp.sum(m.w), bounds=(lower, None)), net, None)
        np.testing.assert_array_equal(flat.lower, [-1.0] * 6 + [-2.0] * 2)


def test_float32_and_mixed_dtypes():
    x32 = {"a": jnp.ones(2, jnp.float32)}
    flat, z0 = flatten(jc.Problem(lambda x, a: jnp.sum(x["a"]), bounds=(0.0, 1.0)), x32, None)
    assert z0.dtype == jnp.float32 and flat.dtype == jnp.float32
    assert flat.lower.dtype == jnp.float32
    assert flat.objective(z0, None).dtype == jnp.float32
    mixed = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(1, jnp.float64)}
    flat, z0 = flatten(jc.Problem(lambda x, a: jnp.sum(x["b"])), mixed, None)
    back = flat.to_pytree(z0)
    assert back["a"].dtype == jnp.float32 and back["b"].dtype == jnp.float64


def test_violation_measures():
    c_eq = jnp.array([0.5, -2.0])
    c_ineq = jnp.array([-1.0, 0.75])
    assert float(max_violation(c_eq, c_ineq)) == 2.0
    assert float(l1_violation(c_eq, c_ineq)) == 0.5 + 2.0 + 0.75
    empty = jnp.zeros((0,))
    assert float(max_violation(empty, empty)) == 0.0
    assert float(max_violation(empty, jnp.array([-1.0]))) == 0.0
    z = jnp.array([0.0, 5.0, -9.0])
    lower = jnp.array([1.0, -jnp.inf, -jnp.inf])
    upper = jnp.array([jnp.inf, 2.0, jnp.inf])
    below, above = bound_residuals(z, lower, upper)
    np.testing.assert_array_equal(below, [1.0, -np.inf, -np.inf])
    np.testing.assert_array_equal(above, [-np.inf, 3.0, -np.inf])
    assert float(max_violation(empty, empty, z, lower, upper)) == 3.0


def test_inequalities_with_bounds_and_split():
    p = jc.Problem(objective, ineq=ineq, bounds=(-1.0, 10.0))
    flat, z0 = flatten(p, X0, None)
    g = inequalities_with_bounds(flat, z0, None)
    assert g.shape == (5 + 2 * 7,)
    np.testing.assert_allclose(g[:5], flat.ineq(z0, None))
    np.testing.assert_allclose(g[5:12], -1.0 - z0)
    np.testing.assert_allclose(g[12:], z0 - 10.0)
    nu_i, nu_l, nu_u = split_bound_multipliers(flat, jnp.arange(19.0))
    np.testing.assert_array_equal(nu_i, np.arange(5.0))
    np.testing.assert_array_equal(nu_l, np.arange(5.0, 12.0))
    np.testing.assert_array_equal(nu_u, np.arange(12.0, 19.0))
    # Without bounds the bound multipliers are zeros.
    flat, z0 = flatten(jc.Problem(objective, ineq=ineq), X0, None)
    assert inequalities_with_bounds(flat, z0, None).shape == (5,)
    nu_i, nu_l, nu_u = split_bound_multipliers(flat, jnp.arange(5.0))
    np.testing.assert_array_equal(nu_l, np.zeros(7))
    np.testing.assert_array_equal(nu_u, np.zeros(7))
