"""`jconstrain.batch`: a batch of solves sharded over every device, one process or many.

The device count is fixed when jax starts, so each sharded check runs in a fresh Python
subprocess that sets `XLA_FLAGS=--xla_force_host_platform_device_count=...` before
importing jax (8 CPU devices in one process; 2 processes of 4 under `jax.distributed`).
The subprocess prints one JSON line of what it saw; the assertions are made here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jconstrain import batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Shared by the subprocesses: a family of disc projections, vmapped over the start
# point, the centre (args) and the ALM's opt_tol.
PRELUDE = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    import jconstrain as jc
    from jconstrain import batch

    problem = jc.Problem(
        objective=lambda x, c: jnp.sum((x - c) ** 2) + 0.1 * jnp.sum(jnp.abs(x) ** 3),
        eq=lambda x, c: x[0] - x[1] ** 2 - 0.1 * c[0],
        ineq=lambda x, c: jnp.sum(x**2) - 1.0,
    )

    def one(x0, c, tol):
        return jc.solve(problem, x0, jc.AugmentedLagrangian(opt_tol=tol), c)

    def family(size):
        rng = np.random.default_rng(size)
        return rng.normal(size=(size, 3)), 2.0 * rng.normal(size=(size, 3)), 10.0 ** rng.uniform(-9, -4, size)

    def shards(leaf):
        rows = lambda s: [s.device.id, s.index[0].start or 0, s.index[0].stop or leaf.shape[0]]
        return sorted(rows(s) for s in leaf.addressable_shards)
    """
)

ONE_PROCESS = PRELUDE + textwrap.dedent(
    """
    out = {"devices": len(jax.devices())}
    run = batch.sharded_vmap(one)
    reference = jax.jit(jax.vmap(one))
    for size in (16, 13):
        X0, C, tols = family(size)
        sols, ref = run(X0, C, tols), reference(X0, C, tols)
        leaves = jax.tree_util.tree_leaves(sols)
        out[str(size)] = {
            "shape": list(sols.x.shape),
            "leaf_shards": [shards(leaf) for leaf in leaves],
            "leaf_specs": [list(leaf.sharding.spec) for leaf in leaves],
            "x": np.asarray(sols.x).tolist(), "x_ref": np.asarray(ref.x).tolist(),
            "status": np.asarray(sols.status).tolist(), "status_ref": np.asarray(ref.status).tolist(),
            "iterations": np.asarray(sols.stats.iterations).tolist(),
            "iterations_ref": np.asarray(ref.stats.iterations).tolist(),
        }
    placed = batch.shard_batch({"a": np.arange(13.0), "b": np.arange(26.0).reshape(13, 2)})
    out["placed"] = {
        "a": np.asarray(placed["a"]).tolist(), "b": np.asarray(placed["b"]).tolist(),
        "a_shards": shards(placed["a"]), "b_shards": shards(placed["b"]),
    }
    print(json.dumps(out))
    """
)

MULTI_PROCESS = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    """
) + PRELUDE + textwrap.dedent(
    """
    from jax.experimental import multihost_utils
    X0, C, tols = family(16)          # every process builds the same full batch
    sols = batch.sharded_vmap(one)(X0, C, tols)
    gathered = multihost_utils.process_allgather(sols.x, tiled=True)
    local = jax.local_devices()[0]    # the unsharded reference, on one device of this process
    ref = jax.jit(jax.vmap(one))(*(jax.device_put(a, local) for a in (X0, C, tols)))
    print(json.dumps({
        "process": jax.process_index(), "devices": len(jax.devices()), "local_devices": len(jax.local_devices()),
        "fully_addressable": sols.x.is_fully_addressable, "shards": shards(sols.x),
        "local_ids": sorted(d.id for d in jax.local_devices()),
        "x": np.asarray(gathered).tolist(), "x_ref": np.asarray(ref.x).tolist(),
    }))
    """
)


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _last_json_line(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _assert_covers_batch(shard_list, devices, rows_each):
    """[device id, start, stop] per shard: every device once, contiguous equal slices."""
    assert sorted(d for d, _, _ in shard_list) == sorted(devices), shard_list
    spans = sorted((start, stop) for _, start, stop in shard_list)
    assert spans == [(i * rows_each, (i + 1) * rows_each) for i in range(len(devices))], spans


@pytest.fixture(scope="module")
def one_process():
    done = subprocess.run(
        [sys.executable, "-c", ONE_PROCESS], env=_env(8), cwd=REPO, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return _last_json_line(done.stdout)


def test_a_batch_of_16_is_split_over_all_8_devices(one_process):
    """Every output leaf: 8 shards of 2 members, one per device, P('batch')."""
    assert one_process["devices"] == 8
    result = one_process["16"]
    assert result["shape"] == [16, 3]
    for spec, shard_list in zip(result["leaf_specs"], result["leaf_shards"]):
        assert spec[:1] == ["batch"] and all(axis is None for axis in spec[1:]), spec
        _assert_covers_batch(shard_list, range(8), 2)


@pytest.mark.parametrize("size", ["16", "13"])
def test_sharded_solve_equals_the_unsharded_vmap(one_process, size):
    """Same x (to 1e-8), statuses and iteration counts as `jax.jit(jax.vmap(solve))` on one device."""
    result = one_process[size]
    x, x_ref = np.asarray(result["x"]), np.asarray(result["x_ref"])
    assert x.shape == (int(size), 3)
    np.testing.assert_allclose(x, x_ref, rtol=0, atol=1e-8)
    assert result["status"] == result["status_ref"]
    assert result["iterations"] == result["iterations_ref"]
    assert len(set(result["iterations"])) > 1  # the members really differ


def test_shard_batch_pads_by_repeating_the_last_member(one_process):
    """13 members on 8 devices: padded to 16 with copies of member 12, 2 per device."""
    placed = one_process["placed"]
    np.testing.assert_array_equal(placed["a"], list(range(13)) + [12.0] * 3)
    np.testing.assert_array_equal(placed["b"], np.concatenate([np.arange(26.0).reshape(13, 2), [[24.0, 25.0]] * 3]))
    _assert_covers_batch(placed["a_shards"], range(8), 2)
    _assert_covers_batch(placed["b_shards"], range(8), 2)


@pytest.mark.slow
def test_two_processes_under_jax_distributed():
    """The same script in 2 processes of 4 CPU devices: each holds its half, all agree."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTI_PROCESS, address, str(rank)],
            env=_env(4), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in range(2)
    ]  # fmt: skip
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=1200)
            assert proc.returncode == 0, stderr[-4000:]
            outputs.append(_last_json_line(stdout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert sorted(o["process"] for o in outputs) == [0, 1]
    for o in outputs:
        assert o["devices"] == 8 and o["local_devices"] == 4 and not o["fully_addressable"]
        # this process's 4 devices hold 4 consecutive slices of 2 members: its half of the batch
        assert sorted(d for d, _, _ in o["shards"]) == o["local_ids"]
        starts = sorted(start for _, start, _ in o["shards"])
        assert starts == [8 * o["process"] + 2 * i for i in range(4)], o["shards"]
        assert all(stop - start == 2 for _, start, stop in o["shards"])
        np.testing.assert_allclose(np.asarray(o["x"]), np.asarray(o["x_ref"]), rtol=0, atol=1e-8)


# ---------------------------------------------------------------- host-side helpers (1 device)


def test_batch_size_and_padding_on_the_host():
    tree = {"x": np.ones((5, 2)), "c": np.arange(5.0)}
    assert batch.batch_size(tree) == 5
    padded = batch.pad_batch(tree, 4)
    assert padded["x"].shape == (8, 2)
    np.testing.assert_array_equal(padded["c"], [0, 1, 2, 3, 4, 4, 4, 4])
    assert batch.pad_batch(tree, 5) is tree


@pytest.mark.parametrize(
    "tree, message",
    [
        ({"x": np.ones((5, 2)), "c": np.ones(4)}, "disagree"),
        ({"x": np.ones((5, 2)), "c": 1.0}, "leading batch axis"),
        ({}, "at least one array"),
    ],
)
def test_batch_size_rejects_inconsistent_batches(tree, message):
    with pytest.raises(ValueError, match=message):
        batch.batch_size(tree)
