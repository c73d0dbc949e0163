"""The machine a run measured: CPU, cores, memory, platform, library versions, JAX backend and devices."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import jax

LIBS = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch")


def host() -> dict:
    """CPU model, cores, memory and platform of this machine (Linux /proc where there is one)."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}
    proc = {p: Path(p).read_text() if Path(p).exists() else "" for p in ("/proc/cpuinfo", "/proc/meminfo")}
    for ln in proc["/proc/cpuinfo"].splitlines() + proc["/proc/meminfo"].splitlines():
        if ln.startswith("model name"):
            info["cpu"] = ln.split(":", 1)[1].strip()
        elif ln.startswith("MemTotal"):
            info["memory_gib"] = int(ln.split()[1]) / 2**20
    return info


def versions() -> dict:
    """Installed versions of the libraries whose speed is measured ('not installed' rather than failing)."""
    out = {}
    for name in LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def describe() -> dict:
    """Everything a figure depends on besides the code: host, versions, JAX backend and devices, torch threads."""
    import torch

    devices = jax.devices()
    return {"machine": host(), "backend": jax.default_backend(), "devices": [str(d) for d in devices],
            "device_kind": devices[0].device_kind, "device_count": len(devices), "versions": versions(),
            "torch_threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}}
