"""The `verbose=True` iteration table, printed from inside compiled code.

Rows go through `jax.debug.callback`, so printing works under `jax.jit`; under
`jax.vmap` each batch member prints its own row.
"""

from __future__ import annotations

import jax
import numpy as np

from jconstrain.solution import Status, status_name

_COLUMNS = ("iter", "f", "violation", "stationarity", "step", "{penalty}")
_WIDTHS = (6, 14, 11, 13, 10, 10)


def header(solver_name: str, penalty_label: str) -> None:
    """Print the table header (once, from compiled code)."""

    def _print() -> None:
        names = [c.format(penalty=penalty_label) for c in _COLUMNS]
        print(f"jconstrain {solver_name}")
        print("  ".join(name.rjust(w) for name, w in zip(names, _WIDTHS)))

    jax.debug.callback(_print)


def _fmt(value: np.ndarray, width: int, integer: bool = False) -> str:
    values = np.atleast_1d(np.asarray(value))
    if values.size != 1:  # a batch reaching the printer unbatched: show its range
        text = f"{values.min():.2e}..{values.max():.2e}"
    elif integer:
        text = str(int(values[0]))
    else:
        text = f"{float(values[0]):.6e}" if width >= 14 else f"{float(values[0]):.3e}"
    return text.rjust(width)


def row(iteration, f, violation, stationarity, step, penalty, active=True) -> None:
    """Print one iteration's row (nothing where `active` is False: a finished vmap member)."""

    def _print(it, f, v, s, a, p, active) -> None:
        if not np.any(active):
            return
        cells = [_fmt(it, _WIDTHS[0], integer=True)]
        cells += [_fmt(x, w) for x, w in zip((f, v, s, a, p), _WIDTHS[1:])]
        print("  ".join(cells))

    jax.debug.callback(_print, iteration, f, violation, stationarity, step, penalty, active)


def summary(status, iterations, f, violation) -> None:
    """Print the final line: the status in words, with the key figures."""

    def _print(code, it, f, v) -> None:
        for c, i, fv, vv in zip(*(np.atleast_1d(np.asarray(a)) for a in (code, it, f, v))):
            name = status_name(int(c))
            words = Status(int(c)).description if name in Status.__members__ else name
            print(f"{name}: {words}; {int(i)} iterations, f = {float(fv):.8e}, violation = {float(vv):.2e}")

    jax.debug.callback(_print, status, iterations, f, violation)
