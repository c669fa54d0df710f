"""Test configuration: the whole suite runs in float64 (float32 tests pass float32 arrays)."""

import os
import sys

# One BLAS thread per test process (and per notebook kernel, which inherits it): pytest -n 2
# on 2 cores otherwise oversubscribes, and JAX's CPU LAPACK runs on scipy's OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

# Let test modules `import problems` (tests/problems.py) wherever pytest is run from.
sys.path.insert(0, os.path.dirname(__file__))
