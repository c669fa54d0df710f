"""Test configuration: the whole suite runs in float64 (float32 tests pass float32 arrays)."""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

# Let test modules `import problems` (tests/problems.py) wherever pytest is run from.
sys.path.insert(0, os.path.dirname(__file__))
