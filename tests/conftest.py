"""Test configuration: the whole suite runs in float64 (float32 tests pass float32 arrays)."""

import os
import sys

# One BLAS thread per test process (and per notebook kernel, which inherits it): pytest -n 2
# on 2 cores otherwise oversubscribes, and JAX's CPU LAPACK runs on scipy's OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

# Property tests: a fixed, derandomised draw by default, so `make test` is reproducible for
# the hypothesis version in constraints.txt; HYPOTHESIS_PROFILE=explore draws 50 examples a
# test (HYPOTHESIS_EXAMPLES=N: N) from a random seed (--hypothesis-seed=N repeats a run).
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("default", max_examples=4, derandomize=True, **_COMMON)
settings.register_profile(
    "explore", max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 50)), derandomize=False, **_COMMON
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Let test modules `import problems` (tests/problems.py) wherever pytest is run from.
sys.path.insert(0, os.path.dirname(__file__))
