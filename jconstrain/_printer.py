"""The `verbose=True` iteration table, printed from inside compiled code.

The header goes through `jax.debug.callback`, rows and the summary through a
`jax.pure_callback` whose result is threaded on, so printing works under `jax.jit`;
under `jax.vmap` each batch member prints its own rows, labelled `#i` and in member
order, and the summary ends with a count of the statuses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jconstrain._solution import Status, StopCause, cause_name, status_name

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


def _passed_through(fn, value, *args):
    """Call the host function fn(value, *args) and return `value` unchanged.

    A `jax.pure_callback` whose result the caller threads on (as the loop counter or the
    status): that orders the calls by data and keeps them alive under `jit`, and under
    `jax.vmap` (`vmap_method="broadcast_all"`) fn sees the whole batch in one call, so it
    can label the members and print them in order (a `jax.debug.callback` is unrolled
    into one unlabelled call per member, in no fixed order).
    """
    value = jnp.asarray(value)

    def host(value, *args):
        fn(value, *args)
        return np.asarray(value)

    shape = jax.ShapeDtypeStruct(value.shape, value.dtype)
    return jax.pure_callback(host, shape, value, *args, vmap_method="broadcast_all")


def _members(*arrays):
    """Rows (member index or None, values...) of possibly batched arrays; None when unbatched."""
    arrays = [np.asarray(a) for a in arrays]
    batch = max(a.ndim for a in arrays)
    if batch == 0:
        return [(None, *arrays)]
    arrays = [np.broadcast_to(a, np.broadcast_shapes(*(b.shape for b in arrays))).reshape(-1) for a in arrays]
    return [(i, *(a[i] for a in arrays)) for i in range(arrays[0].shape[0])]


def _label(member) -> str:
    return "" if member is None else f"#{member} "


def row(iteration, f, violation, stationarity, step, penalty, active=True):
    """Print one iteration's row (nothing where `active` is False: a finished vmap member);
    returns `iteration` (thread it on, see `_passed_through`). Under `jax.vmap` each
    active member prints its own row, labelled `#i`, in member order."""

    def _print(it, f, v, s, a, p, active) -> None:
        for member, it, f, v, s, a, p, on in _members(it, f, v, s, a, p, active):
            if not on:
                continue
            cells = [_fmt(it, _WIDTHS[0], integer=True)]
            cells += [_fmt(x, w) for x, w in zip((f, v, s, a, p), _WIDTHS[1:])]
            print(_label(member) + "  ".join(cells))

    return _passed_through(_print, iteration, f, violation, stationarity, step, penalty, active)


def summary(status, iterations, f, violation, cause=0):
    """Print the final line: the status in words (for STALLED with its `StopCause`), with
    the key figures; returns `status` (thread it on). Under `jax.vmap`: one line per
    member (`#i`, in order), then a count of the statuses, e.g.
    `64 solves: 62 CONVERGED, 2 MAX_STEPS`."""

    def _print(code, it, f, v, why) -> None:
        members = _members(code, it, f, v, why)
        for member, c, i, fv, vv, w in members:
            name = status_name(int(c))
            words = Status(int(c)).description if name in Status.__members__ else name
            if int(w) in StopCause.__members__.values() and int(w) != StopCause.NONE:
                words += f" [{cause_name(int(w))}: {StopCause(int(w)).description}]"
            print(f"{_label(member)}{name}: {words}; {int(i)} iterations, f = {float(fv):.8e}, violation = {float(vv):.2e}")
        if members[0][0] is not None:
            print(count_statuses([m[1] for m in members]))

    return _passed_through(_print, status, iterations, f, violation, jnp.asarray(cause, jnp.int32))


def count_statuses(codes) -> str:
    """`N solves: a CONVERGED, b MAX_STEPS, ...` (statuses in `Status` order)."""
    names = [status_name(int(c)) for c in np.atleast_1d(np.asarray(codes)).reshape(-1)]
    order = [s.name for s in Status] + sorted(set(names) - set(Status.__members__))
    counts = ", ".join(f"{names.count(n)} {n}" for n in order if n in names)
    return f"{len(names)} solve{'s' if len(names) != 1 else ''}: {counts}"
