"""What names a compiled program kept between runs (programs.py): everything that shapes the executable.

    digest, text = program_key.key(fn, args, static)

The text lists this package's source digest, the versions of Python, jax, jaxlib, flax and optax, the devices, the
host CPU, the backend's settings from the environment, JAX's settings, the function, its static arguments and the
shape, dtype and sharding of every argument; the digest of the text names the entry, and the entry carries the text.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import jax

from bigram_jax.config import RUN_ONLY, Config

_NOT_IN_KEY = re.compile(r"cache|^jax_log|logging|timeout")  # JAX settings that change no program
# settings of a backend read from the environment (XLA_PYTHON_CLIENT_* size memory pools, not programs)
_BACKEND_ENV = re.compile(r"XLA_FLAGS|LIBTPU_INIT_ARGS|TPU_.*|NEURON_.*|NVIDIA_TF32_OVERRIDE")
_CPUINFO_KEYS = {"vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU implementer",
                 "CPU architecture", "CPU variant", "CPU part"}


@functools.cache
def host_cpu() -> str:
    """The host CPU as XLA:CPU compiles for it: architecture, model and instruction-set flags (Linux's
    /proc/cpuinfo; elsewhere what the platform module knows). Its executables hold code for this CPU alone."""
    parts = [platform.machine(), platform.processor()]
    try:
        first = Path("/proc/cpuinfo").read_text(errors="replace").split("\n\n")[0]
    except OSError:
        first = ""
    for line in first.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in _CPUINFO_KEYS:
            parts.append(f"{name.strip()}={value.strip()}")
    return "|".join(parts)


@functools.cache
def _fixed() -> str:
    """What every program of this process depends on and cannot change while it runs: versions, source, machine."""
    import flax
    import jaxlib
    import optax

    source = hashlib.sha256()
    for path in sorted(Path(__file__).parents[1].rglob("*.py")):  # the whole bigram_jax package
        source.update(path.read_bytes())
    devices = [(d.id, d.platform, d.device_kind, d.process_index) for d in jax.devices()]
    backend_env = sorted((k, v) for k, v in os.environ.items() if _BACKEND_ENV.fullmatch(k))
    return repr((sys.version, jax.__version__, jaxlib.__version__, flax.__version__, optax.__version__,
                 jax.devices()[0].client.platform_version, devices, host_cpu(), backend_env, source.hexdigest()))


def environment() -> str:
    """What every program of this process depends on besides its own arguments: _fixed, and JAX's settings as they
    are now (a setting changed after the first program, a matmul precision say, names other programs)."""
    settings = sorted((k, repr(v)) for k, v in jax.config.values.items() if not _NOT_IN_KEY.search(k))
    return _fixed() + repr(settings)


def _static(value: Any) -> str:
    """A static argument as text that is the same in every process (a Config without its run-only fields)."""
    if isinstance(value, Config):
        value = {k: v for k, v in value.to_dict().items() if k not in RUN_ONLY}
    text = repr(value)
    if isinstance(value, jax.sharding.Mesh):  # its text gives the axes, not which device sits where
        text += repr(value.device_ids.tolist())
    if " at 0x" in text:  # an address: the name would differ in every process and nothing would be found again
        raise TypeError(f"static argument {text[:80]} has no stable text")
    return text


def _leaf(x: Any) -> str:
    """An argument leaf's shape, dtype, weak type and sharding (arrays not on a device: 'host')."""
    dtype = getattr(x, "dtype", type(x).__name__)
    weak = getattr(x, "weak_type", not hasattr(x, "dtype"))
    return f"{getattr(x, 'shape', ())}|{dtype}|{weak}|{getattr(x, 'sharding', None) or 'host'}"


def key(fn: Any, args: tuple, static: dict) -> tuple[str, str]:
    """(the digest an entry is stored under, the whole key it carries)."""
    if "<lambda>" in fn.__qualname__:  # two lambdas of one module would share a name
        raise TypeError(f"{fn.__module__}.{fn.__qualname__}: give the function a name to keep it between runs")
    paths = jax.tree_util.tree_flatten_with_path(args)[0]
    parts = [environment(), f"{fn.__module__}.{fn.__qualname__}",
             *(f"{k}={_static(v)}" for k, v in sorted(static.items())),
             *(f"{jax.tree_util.keystr(p)}:{_leaf(x)}" for p, x in paths)]
    text = "\n".join(parts)
    return hashlib.sha256(text.encode()).hexdigest()[:40], text
