"""Memory: what a run needs on each device, and what the device (or the host, within its container) has.

Checked at start, so a run that cannot fit says so in one line instead of being killed mid-way.
"""
from __future__ import annotations

import os

import jax
from jax.sharding import Mesh

from bigram_jax.config import Config
from bigram_jax.errors import UserError
from bigram_jax.model import XENT_CHUNK

# Bytes a step holds at its peak, from XLA's memory analysis of the job's compiled loop on the CPU (bench/step_memory.py
# measures them; tests/devices/test_memory.py checks these equal its figures):
STATE_BYTES_PER_PARAM = 16  # the f32 table and both AdamW moments (12, updated in place: donated) and one gradient (4)
LOGITS_COPIES = 2  # gather loss: (positions, V) float32 logits and their gradient, of at most XENT_CHUNK positions
COUNTS_BYTES_PER_PARAM = 4  # counts loss: the batch's V x V counts, counted in float32
MEMORY_FRACTION = 0.9  # of the memory JAX may use on a device (GPU: its pool, 75% of the memory by default)


def device_bytes(device: jax.Device) -> int | None:
    """Memory JAX may use on a local device, in bytes; None where the backend does not say."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (some backends raise instead of returning None)
        return None
    return (stats or {}).get("bytes_limit")


def _read_int(path: str) -> int | None:
    """An integer from a /proc or /sys file; None if absent or not a number ('max')."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cgroup_limit() -> int | None:
    """The container's memory limit (cgroup v2, else v1), if it has one."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        v = _read_int(path)
        if v is not None and v < 1 << 60:  # v1 says "no limit" with a huge number
            return v
    return None


def host_bytes() -> int:
    """The memory this process may use in all: the host's, or its container's limit if lower."""
    phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(phys, _cgroup_limit() or phys)


def host_available_bytes() -> int:
    """Memory free for this run now: MemAvailable, and no more than the container's limit leaves."""
    avail = host_bytes()
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = min(avail, int(line.split()[1]) * 1024)
    except OSError:
        pass
    used = _read_int("/sys/fs/cgroup/memory.current") or _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes")
    limit = _cgroup_limit()
    return min(avail, limit - used) if limit and used else avail


CPU_RESIDENT_MAX = 256 << 20  # on CPU a device copy of the corpus only duplicates the memory map: small ones only
DEVICE_DATA_FRACTION = 0.25  # of a device's memory left by the table and moments, for a resident corpus


def data_home(cfg: Config, n_tokens: int, vocab_size: int, mesh: Mesh) -> str:
    """'device' (the corpus copied to every device) or 'host' (memory-mapped, windows fed): cfg.data_on, or
    for 'auto' the device when an int32 copy per device fits its budget."""
    if cfg.data_on != "auto":
        return cfg.data_on
    local = jax.local_devices()
    need = 4 * n_tokens  # int32 per token, on every device
    if local[0].platform == "cpu":  # CPU devices share the host's memory: count every copy against it
        return "device" if need * len(local) <= min(CPU_RESIDENT_MAX, host_available_bytes() // 4) else "host"
    limit = device_bytes(local[0])
    if limit is None:  # an accelerator that does not say what it holds: only a copy as small as the CPU's keeps
        return "device" if need <= CPU_RESIDENT_MAX else "host"
    state = STATE_BYTES_PER_PARAM * vocab_size * vocab_size / mesh.shape["model"]
    return "device" if need <= DEVICE_DATA_FRACTION * (limit - state) else "host"


def run_bytes(cfg: Config, vocab_size: int, mesh: Mesh, resident_tokens: int, draw_steps: int) -> dict[str, float]:
    """Bytes one device needs at the peak of a step, by part: the state and the loss's work as XLA's memory analysis
    measured them (on the CPU; an accelerator's compiler may place buffers otherwise), the rest by their sizes."""
    V, B, T = vocab_size, cfg.batch_size, cfg.block_size
    dp, mp = mesh.shape["data"], mesh.shape["model"]
    return {"table, AdamW moments and gradient": STATE_BYTES_PER_PARAM * V * V / mp,
            "loss": loss_bytes(cfg.for_vocab(V).loss, V, B * T / dp),
            "batches": 8 * draw_steps * B * (T + 1) / dp, "corpus copy": 4 * resident_tokens,
            "closing sample": 12 * cfg.sample_tokens}


def loss_bytes(loss: str, V: int, positions: float) -> float:
    """Bytes the loss's work holds at a step's peak beside the state, for `positions` = B T on the device."""
    if loss == "counts":  # past 2**24 a step, float32 would not count exactly: int32 counts and a float32 copy
        return COUNTS_BYTES_PER_PARAM * V * V * (1 if positions < 2**24 else 2)
    return LOGITS_COPIES * 4 * min(positions, XENT_CHUNK) * V  # the gathered loss goes a chunk at a time


def plan(cfg: Config, n_tokens: int, vocab_size: int, mesh: Mesh, draw_steps: int) -> tuple[str, dict[str, float]]:
    """(where the corpus lives, run_bytes by part): the job's plan, and what the device check reports `auto` picks;
    one function, so the check's figures are the job's own."""
    home = data_home(cfg, n_tokens, vocab_size, mesh)
    return home, run_bytes(cfg, vocab_size, mesh, n_tokens if home == "device" else 0, draw_steps)


def check_fits(parts: dict[str, float]) -> None:
    """Refuse, at start and in one line, a run whose arrays cannot fit the memory actually available: the
    device's (accelerators), or the host's less what is in use, within the container's limit (CPU)."""
    local = jax.local_devices()
    if local[0].platform == "cpu":  # CPU devices share the host's memory
        limit, per = host_available_bytes(), len(local)
    else:  # an accelerator's own memory; one that does not say is not checked (its host's memory says nothing)
        limit, per = device_bytes(local[0]), 1
        if limit is None:
            return
    need = per * sum(parts.values())
    if need > MEMORY_FRACTION * limit:
        big = ", ".join(f"{k} {v * per / 2**30:.3g}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3])
        raise UserError(f"this needs about {need / 2**30:.3g} GiB ({big} GiB) but {limit / 2**30:.3g} GiB are "
                        "available: ask for fewer tokens, a smaller batch or vocabulary")
