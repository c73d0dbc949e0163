"""Devices: the (data, model) mesh, where each array lives on it, and JAX's multi-process runtime.

Data parallel: each step's B window starts are sharded along 'data', so every device reads its slice of the
same global batch. Model parallel: the (V, V) table and both AdamW moments are split by rows along 'model'.
Everything else (step, key, counters, the corpus) is replicated. XLA's SPMD partitioner inserts the
collectives (the gradient all-reduce, the row gathers of the loss and the sampler).
"""
from __future__ import annotations

import math
import os
import sys
import threading
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bigram_jax.config import Config
from bigram_jax.devices.memory import (
    MEMORY_FRACTION,
    STATE_BYTES_PER_PARAM,
    device_bytes,
    host_bytes,
)
from bigram_jax.errors import UserError

JOINED = False  # this process joined a multi-process run (it must leave it through JAX's exit handler)


def check_coordinator(address: str) -> None:
    """HOST:PORT with a port in 1..65535 and a host name that resolves; else one line, at once."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234), got {address!r}")
    try:
        socket.getaddrinfo(host.strip("[]"), int(port))
    except (OSError, UnicodeError) as e:
        raise UserError(f"--coordinator: cannot resolve host {host!r} ({e})") from None


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None,
               timeout: int | None = None) -> None:
    """Join JAX's multi-process runtime (arguments from the environment on TPU pods and SLURM when None).

    JAX's own time-out ends the process with a C++ abort and a stack trace; a watchdog ends it first, with one
    line, when the other processes have not all joined after `timeout` seconds (JAX's default, 300)."""
    global JOINED
    timeout = timeout or 300
    # CPU devices have no collectives across processes unless told to use gloo; harmless on GPU/TPU
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = f"the coordinator at {coordinator}" if coordinator else "the coordinator the environment names"
    who = f"process {process_id} of {num_processes}" if process_id is not None else "this process"
    print(f"--distributed: {who} is joining {where} (for up to {timeout} s: --distributed-timeout)",
          file=sys.stderr, flush=True)
    joined = threading.Event()

    def watchdog() -> None:
        if not joined.wait(timeout):
            print(f"--distributed: error: {who} could not join {where} within {timeout} s: are all processes "
                  "started, with the same --coordinator, and is it reachable?", file=sys.stderr, flush=True)
            os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    JOINED = True
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout + 30)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--distributed: cannot join the other processes: {str(e).splitlines()[0]}") from None
    finally:
        joined.set()


def is_primary() -> bool:
    """True in the process that writes logs, summaries and samples (process 0)."""
    return jax.process_index() == 0


def choose_model_parallel(cfg: Config, vocab_size: int, devices: list) -> int:
    """The 'model' axis size: cfg.model_parallel, or for 0 the fewest devices over which the state fits."""
    n, V = len(devices), vocab_size
    if cfg.model_parallel:
        mp = cfg.model_parallel
        if n % mp:
            raise UserError(f"model_parallel {mp} must divide the number of devices ({n})")
        if V % mp:
            raise UserError(f"model_parallel {mp} must divide the vocabulary size {V} (the table's rows are split "
                            f"evenly); token-id data can be padded with --vocab-size, e.g. {_padded(V, mp)}")
        return mp
    need = STATE_BYTES_PER_PARAM * V * V
    local = jax.local_devices()[0]  # memory_stats() answers only for this process's devices
    if local.platform == "cpu":  # CPU devices share the host's memory: splitting the table saves nothing
        if need > MEMORY_FRACTION * host_bytes():
            raise UserError(f"the {V}x{V} table needs about {need / 2**30:.1f} GiB with AdamW; this host has "
                            f"{host_bytes() / 2**30:.1f} GiB")
        return 1
    limit = device_bytes(local)
    if limit is None or need <= MEMORY_FRACTION * limit:
        return 1
    for mp in (d for d in range(2, n + 1) if n % d == 0 and V % d == 0):
        if need / mp <= MEMORY_FRACTION * limit:
            return mp
    raise UserError(f"the {V}x{V} table needs about {need / 2**30:.1f} GiB with AdamW; it fits none of the splits "
                    f"of {n} device(s) that divide V = {V} (token ids: pad with --vocab-size {_padded(V, n)})")


def _padded(V: int, mp: int) -> int:
    """The next vocabulary size that splits over `mp` devices, rounded as nanoGPT rounds (a multiple of 64)."""
    m = math.lcm(64, mp)
    return -(-V // m) * m


def make_mesh(cfg: Config, vocab_size: int, devices: list | None = None) -> Mesh:
    """A (data, model) mesh over all devices of all processes; checks B against the data axis."""
    devices = list(devices if devices is not None else jax.devices())
    mp = choose_model_parallel(cfg, vocab_size, devices)
    dp = len(devices) // mp
    if cfg.batch_size % dp:
        raise UserError(f"batch_size {cfg.batch_size} must divide by the data-parallel device count {dp} "
                        f"({len(devices)} devices, model_parallel {mp}): try --batch-size {-(-cfg.batch_size // dp) * dp}, "
                        "or fewer devices (CUDA_VISIBLE_DEVICES / TPU_VISIBLE_CHIPS)")
    # Auto axes: under jax 0.10's default Explicit axes the embedding gather does not partition
    return jax.make_mesh((dp, mp), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def describe(mesh: Mesh) -> str:
    """One line: the mesh's shape, its devices and processes."""
    d = mesh.devices.reshape(-1)
    return (f"mesh: data={mesh.shape['data']} x model={mesh.shape['model']} over {d.size} {d[0].platform} "
            f"device(s) in {jax.process_count()} process(es)")


def spec(x: Any) -> P:
    """Where a state leaf lives: (V, V) arrays (table, moments) by rows along 'model'; the rest replicated."""
    return P("model", None) if getattr(x, "ndim", 0) == 2 else P()


def shardings(tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for every leaf of a state pytree (or its abstract shape)."""
    return jax.tree.map(lambda x: NamedSharding(mesh, spec(x)), tree)


def constrain(tree: Any, mesh: Mesh | None) -> Any:
    """Pin a state pytree to its shardings inside jit (a no-op without a mesh)."""
    return tree if mesh is None else jax.lax.with_sharding_constraint(tree, shardings(tree, mesh))


def abstract_on(tree: Any, mesh: Mesh) -> Any:
    """Abstract arrays that carry their shardings: restore targets that land each shard on its device."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings(tree, mesh))


def replicate(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """A host array as one global array with a full copy on every device of every process."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, P()), lambda index: x[index])


def to_host(x: jax.Array) -> np.ndarray:
    """A global array's full value on this host, gathered from the other processes if needed."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def agree(stop: int, chunk: int, save: bool) -> tuple[int, int, bool]:
    """One decision for all processes: stop if any process got a signal; the shortest next chunk; save if any
    process's clock says a checkpoint is due.

    Each process times its own chunks; run apart, they would call collectives in different numbers and hang.
    """
    if jax.process_count() == 1:
        return stop, chunk, save
    both = np.asarray(multihost_utils.process_allgather(np.array([stop, chunk, save], np.int32)))  # (P, 3)
    return int(both[:, 0].max()), int(both[:, 1].min()), bool(both[:, 2].max())


def shard_report(state: Any) -> dict:
    """What the first local device holds of each (V, V) leaf (table, AdamW mu and nu): shapes and bytes."""
    dev = jax.local_devices()[0]
    shapes, total = {}, 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if getattr(leaf, "ndim", 0) != 2:
            continue
        name = jax.tree_util.keystr(path)
        name = "mu" if ".mu" in name else "nu" if ".nu" in name else "params" if name.startswith(".params") else name
        (shard,) = [s for s in leaf.addressable_shards if s.device == dev]
        shapes[name] = list(shard.data.shape)
        total += shard.data.nbytes
    return {"shard_shapes": shapes, "table_and_moments_bytes_per_device": total}
