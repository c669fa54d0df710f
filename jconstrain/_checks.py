"""Range checks of settings (solver fields, optimiser arguments), run before tracing.

`check_range` only judges concrete numbers (Python and NumPy numbers, concrete 0-d
arrays): a traced value, as when a sweep `jax.vmap`s over a solver's field, passes
unchecked, and a value of the wrong kind is left to the type checks of `jc.solve`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import numpy as np


def concrete(value: Any) -> float | None:
    """`value` as a Python float if it is a concrete real number, else None."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.ndim(value) == 0:
        try:
            return float(np.asarray(value))
        except (TypeError, ValueError):
            return None
    return None


def check_range(
    where: str,
    value: Any,
    lo: Any = -math.inf,
    hi: Any = math.inf,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise ValueError naming `where` unless lo <= value <= hi (strict on an open side).

    NaN is never in range. A bound that is itself not concrete (a traced field) is
    skipped; `lo`/`hi` may be other fields, e.g. `check_range("SQP.c2", c2, c1, 1, ...)`.
    """
    x = concrete(value)
    if x is None:
        return
    low, high = concrete(lo), concrete(hi)
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    below = x <= low if lo_open else x < low
    above = x >= high if hi_open else x > high
    if math.isnan(x) or below or above:
        interval = f"{'(' if lo_open else '['}{_show(low)}, {_show(high)}{')' if hi_open else ']'}"
        raise ValueError(f"{where} must lie in {interval}, got {value!r}.")


def check_count(where: str, value: Any, least: int = 0, allow_none: bool = False) -> None:
    """Raise ValueError naming `where` unless the integer setting is >= least (or None
    where allowed); non-integers are left to the type checks."""
    if value is None and allow_none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        return
    if value < least:
        raise ValueError(f"{where} must be >= {least}, got {value}.")


def _show(bound: float) -> str:
    return {math.inf: "inf", -math.inf: "-inf"}.get(bound, f"{bound:g}")
