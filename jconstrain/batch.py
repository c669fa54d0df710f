"""Batches of solves spread over every device: a 1-D mesh, padding, sharded placement.

    run = jc.batch.sharded_vmap(lambda x0, a: jc.solve(problem, x0, jc.SQP(), a))
    sols = run(X0, A)      # every leaf of X0 and A has the batch on its leading axis

`sharded_vmap(fn)` is `jax.jit(jax.vmap(fn))` with the batch axis split over a 1-D mesh
of devices (by default `jax.devices()`; under `jax.distributed` that is every device of
every process). A batch of size B on D devices is padded to D·⌈B/D⌉ members by repeating
its last member (a valid problem: padding adds no failure of its own), each
device solves its B/D members in its own compiled loops (`jax.shard_map`: a device's
loops stop when its own members are done), and the outputs are trimmed back to B.
Members are independent: no communication happens inside the solve.

On a CPU split into host devices (`--xla_force_host_platform_device_count`), solvers that
call jaxlib's batched LAPACK kernels (`jc.SQP`, `jc.qp`) can deadlock: those kernels wait
on the thread pool that runs the devices themselves (seen with 50 SQP members on each of 2
devices). The augmented Lagrangian and penalty solvers make no such calls.

Multi-host: run the same program in every process after `jax.distributed.initialize()`,
each process holding the same full batch (e.g. generated from a shared seed);
`shard_batch` copies to each device only its own slice (`jax.make_array_from_callback`).
The outputs are global arrays: `jax.experimental.multihost_utils.process_allgather`
brings a whole one to every host, `.addressable_shards` gives a process its own members.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"
"""The name of the mesh axis that `batch_mesh` builds and the batch is split along."""


def batch_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = AXIS) -> Mesh:
    """A 1-D mesh over `devices` (default: `jax.devices()`, all processes' devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,))


def batch_size(tree: Any) -> int:
    """The common leading-axis length of the array leaves of `tree`."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("the batch must contain at least one array.")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) > 0 else None for leaf in leaves}
    if None in sizes:
        raise ValueError("every leaf of the batch needs a leading batch axis; got a scalar leaf.")
    if len(sizes) != 1:
        raise ValueError(f"the leaves of the batch disagree on the batch size: {sorted(sizes)}.")
    return sizes.pop()


def pad_batch(tree: Any, multiple: int) -> Any:
    """Pad every leaf's leading axis to a multiple of `multiple` by repeating its last member.

    Repeating a real member (rather than zeros) keeps the padding a valid problem.
    """
    size = batch_size(tree)
    if size == 0:
        raise ValueError("the batch is empty.")
    extra = -size % multiple
    if extra == 0:
        return tree

    def pad(leaf):
        leaf = np.asarray(leaf)
        return np.concatenate([leaf, np.repeat(leaf[-1:], extra, axis=0)], axis=0)

    return jax.tree_util.tree_map(pad, tree)


def shard_batch(tree: Any, mesh: Mesh | None = None) -> Any:
    """Place `tree` (leading axis = batch) on `mesh`, the batch axis split over its devices.

    The batch is padded to a multiple of the device count (`pad_batch`). Each device
    receives only its slice, built from the host copy of the full batch that every
    process holds, so the same call works in one process and under `jax.distributed`.
    Returns the padded tree of global `jax.Array`s, sharded `PartitionSpec("batch")`.
    """
    mesh = batch_mesh() if mesh is None else mesh
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    padded = pad_batch(tree, mesh.devices.size)

    def place(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(place, padded)


def sharded_vmap(fn: Callable[..., Any], mesh: Mesh | None = None) -> Callable[..., Any]:
    """`jax.jit(jax.vmap(fn))` with the batch axis sharded over `mesh` (default: all devices).

    Every positional argument of the returned function is a pytree whose leaves carry
    the batch on their leading axis (close over what all members share, e.g. the
    problem or a solver). The result is `fn`'s output for the caller's batch; one
    compilation per distinct input shape.

    A batch whose size is a multiple of the device count comes back with every output
    leaf sharded `PartitionSpec("batch")` (nothing moves between devices). Otherwise
    the padding members are cut off inside the compiled call, and since XLA cannot
    split such a size evenly the trimmed outputs are gathered (replicated); to keep
    them sharded, call `jax.jit(jax.vmap(fn))(*shard_batch(batch))` and ignore the
    padded tail.
    """
    batched = jax.vmap(fn)

    @functools.cache
    def compiled(layout: Mesh, trim: bool) -> Callable[..., Any]:
        # shard_map: each device runs the vmapped solve on its own members, so its loops
        # stop when its members are done. (A jit over sharded arrays would partition one
        # global loop instead: every iteration would agree across devices whether any
        # member still runs.) check_vma=False: fn is per member, no collective to type-check.
        spec = PartitionSpec(layout.axis_names[0])
        local = jax.shard_map(batched, mesh=layout, in_specs=spec, out_specs=spec, check_vma=False)
        if trim:
            solve_and_trim = lambda size, *padded: jax.tree_util.tree_map(lambda leaf: leaf[:size], local(*padded))
            return jax.jit(solve_and_trim, static_argnums=0)
        return jax.jit(local, out_shardings=NamedSharding(layout, spec))

    def run(*batch: Any) -> Any:
        layout = batch_mesh() if mesh is None else mesh
        size = batch_size(batch)
        padded = shard_batch(batch, layout)
        if batch_size(padded) == size:
            return compiled(layout, False)(*padded)
        return compiled(layout, True)(size, *padded)

    return run


__all__ = ["AXIS", "batch_mesh", "batch_size", "pad_batch", "shard_batch", "sharded_vmap"]
