"""The public face: `dir(jc)` lists the public names only, every module outside the public
submodules is `_`-prefixed, and a third-party solver finds what it needs in `jc`."""

from __future__ import annotations

import pkgutil

import jax.numpy as jnp
import numpy as np

import jconstrain as jc

PUBLIC_MODULES = {"jconstrain.batch", "jconstrain.formulations", "jconstrain.projections", "jconstrain.qp",
                  "jconstrain.reparam", "jconstrain.train"}


def test_dir_lists_the_public_names_only():
    assert set(dir(jc)) == set(jc.__all__) | {"__version__"}
    assert all(not name.startswith("_") for name in jc.__all__)


def test_every_other_module_is_private():
    modules = [m.name for m in pkgutil.walk_packages(jc.__path__, "jconstrain.")]
    assert len(modules) > 20
    for name in modules:
        parts = name.split(".")[1:]
        if name in PUBLIC_MODULES:
            continue
        assert any(part.startswith("_") for part in parts), f"{name} is neither public nor _-prefixed"


class _GradientDescent(jc.AbstractSolver):
    """A minimal third-party solver, built from `jc` names only: fixed-step gradient
    descent on an unconstrained problem."""

    lr: float = 0.1
    max_steps: int = 500

    @property
    def steps(self) -> int:
        return self.max_steps

    def init(self, problem: jc.FlatProblem, z0, args, warm_start):
        return z0

    def step(self, problem: jc.FlatProblem, z, args, active=True):
        import jax

        return z - self.lr * jax.grad(problem.objective)(z, args)

    def _gradient_norm(self, problem, z, args):
        import jax

        return jnp.max(jnp.abs(jax.grad(problem.objective)(z, args)))

    def terminate(self, problem, z, args):
        done = self._gradient_norm(problem, z, args) <= 1e-8
        return done, jnp.where(done, jc.Status.CONVERGED, jc.Status.MAX_STEPS).astype(jnp.int32)

    def report(self, problem, z, args) -> jc.Report:
        zeros = jnp.zeros_like(z)
        return jc.Report(
            z=z, f=problem.objective(z, args), y_eq=jnp.zeros((0,), z.dtype), y_ineq=jnp.zeros((0,), z.dtype),
            z_lower=zeros, z_upper=zeros, stationarity=self._gradient_norm(problem, z, args),
            violation=jnp.zeros((), z.dtype), evaluations=jnp.asarray(0, jnp.int32),
            inner_iterations=jnp.asarray(0, jnp.int32),
        )

    def progress(self, z) -> jc.Progress:
        zero = jnp.zeros((), z.dtype)
        return jc.Progress(f=zero, violation=zero, stationarity=zero, step=zero, penalty=zero)


def test_a_third_party_solver_runs_through_solve():
    problem = jc.Problem(objective=lambda x, a: jnp.sum((x["w"] - a) ** 2))
    sol = jc.solve(problem, {"w": jnp.zeros(3)}, _GradientDescent(), args=jnp.arange(3.0))
    assert int(sol.status) == jc.Status.CONVERGED
    np.testing.assert_allclose(np.asarray(sol.x["w"]), np.arange(3.0), atol=1e-8)
