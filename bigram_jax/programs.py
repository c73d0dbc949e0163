"""Compiled programs kept between runs: a warm start loads each executable instead of tracing, lowering and
compiling it again (that, not XLA's compile, is most of a small job's start-up; JAX's own cache saves only the
compile).

    compiled(train_steps, state, data, n, out=(state, 0.0), cfg=cfg, mesh=mesh)(state, data, n)

An entry's name is a digest of everything that shapes the program: this package's source, the versions of Python,
jax, jaxlib, flax and optax, the devices, XLA_FLAGS and JAX's settings, the function, its static arguments and
the shape, dtype and sharding of every argument (values never: a program is the same for any values). What the
name cannot see is a module constant patched at run time: code that does that must not come through here. An
entry holds a checksum of itself: a damaged, truncated or unreadable entry is compiled afresh and replaced, never
loaded. A cache that cannot be written is skipped. Entries are pickles, trusted as JAX trusts its own cache: they
live in the user's cache folder. Runs of several processes compile as before (each must build the same program).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import jax

from bigram_jax.cache import cache_dir
from bigram_jax.config import Config, RUN_ONLY

# XLA:CPU options by what a program is for (elsewhere, and for programs of neither kind: XLA's defaults). Both keep
# the bits; measured on the 2-core Xeon (bench --only compile,train,scale,generate and the cold job):
CPU_PROFILES = {
    # training loops: backend optimization level 1 (XLA's default is 3) compiles train_steps a quarter faster
    # (0.8 -> 0.6 s) and runs it as fast or faster (a bigram step is a gather, a scatter and elementwise ops)
    "loop": {"xla_backend_optimization_level": 1},
    # programs that run once or briefly: XLA:CPU's older elemental emitters too compile one with random draws in
    # 60% of the time (init_on 0.30 -> 0.18 s, a 500-token sample 0.40 -> 0.23 s), but can run half again as long
    # on wide batches (64 samples drawn at once); level 1 alone slows wide sampling by a tenth, hence no default
    "once": {"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False},
}
MAX_ENTRIES = 256  # the least recently used entries beyond this many are deleted when one is written
_LOADED: dict[str, Callable] = {}  # this process's programs by name: each is loaded or compiled once
_NOT_IN_KEY = re.compile(r"cache|^jax_log|logging|timeout")  # JAX settings that change no program
_SEEN = threading.local()  # per thread: what XLA compiled (by name) and JAX's persistent-cache hits (see _compile)
_LOCK = threading.RLock()  # one program loaded or compiled at a time: _LOADED and JAX's cache switch are shared


def _count(event: str, *_: Any, fun_name: str = "", **__: Any) -> None:
    """jax.monitoring listener: notes, in the thread that compiles, each XLA compile's name and each JAX cache hit."""
    if event == "/jax/core/compile/backend_compile_duration":
        _SEEN.compiled = getattr(_SEEN, "compiled", [])
        _SEEN.compiled.append(fun_name)
    elif event == "/jax/compilation_cache/cache_hits":
        _SEEN.hits = getattr(_SEEN, "hits", 0) + 1


def _seen() -> tuple[list[str], int]:
    """(names XLA compiled, JAX cache hits) in this thread so far."""
    return getattr(_SEEN, "compiled", []), getattr(_SEEN, "hits", 0)


jax.monitoring.register_event_listener(_count)
jax.monitoring.register_event_duration_secs_listener(_count)


def compiled(fn: Any, *args: Any, out: Any, profile: str | None = None, **static: Any) -> Callable:
    """`fn` (a jax.jit function) compiled for `args` (arrays, or jax.ShapeDtypeStruct with shardings) and the
    static keyword arguments; call it with arrays like `args`. `out` is any pytree shaped as fn's output: a
    loaded executable takes its output structure from it (saving one is checked against it). `profile`: 'loop'
    or 'once', what the program is for (see CPU_PROFILES); None, XLA's defaults."""
    options = compile_options(profile)
    if jax.process_count() > 1:  # every process must compile the same program at the same time
        return compile_lowered(fn.lower(*args, **static), profile)
    name = _name(fn, args, {**static, "compiler_options": options})
    with _LOCK:
        if name not in _LOADED:
            _LOADED[name] = _load(name, args, out) or _compile_and_store(name, fn, args, out, static, options)
        return _LOADED[name]


def run(fn: Any, *args: Any, out: Any, profile: str | None = None, **static: Any) -> Any:
    """compiled(...) called on `args`."""
    return compiled(fn, *args, out=out, profile=profile, **static)(*args)


def compile_options(profile: str | None) -> dict | None:
    """XLA's options for a program of this profile on this platform (None: XLA's defaults)."""
    return CPU_PROFILES[profile] if profile is not None and jax.default_backend() == "cpu" else None


def compile_lowered(lowered: Any, profile: str | None) -> Any:
    """A jax Lowered compiled with a profile's options (for code that times compiles: the bench)."""
    return _compile(lowered, compile_options(profile))[0]


def _compile(lowered: Any, options: dict | None) -> tuple[Any, bool]:
    """(lowered.compile(options), whether XLA compiled it here and now: JAX hands back an executable it already
    holds in memory without compiling, and that one may have come from its persistent cache, see
    _without_xla_cache). A jaxlib that no longer knows an option compiles with XLA's defaults instead."""
    target = getattr(getattr(lowered, "_lowering", None), "_name", None)  # 'jit(fn)': JAX's name for the compile
    for attempt in ([options, None] if options is not None else [None]):
        names, hits_before = _seen()
        n = len(names)
        try:
            program = lowered.compile(attempt)
        except jax.errors.JaxRuntimeError as e:
            if attempt is None or "No such compile option" not in str(e):
                raise
            continue
        names, hits = _seen()
        return program, target is not None and names[n:].count(target) == 1 and hits == hits_before
    raise AssertionError("unreachable: the last attempt either returns or raises")


@functools.cache
def _environment() -> str:
    """What every program of this process depends on besides its own arguments."""
    import flax
    import jaxlib
    import optax

    source = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        source.update(path.read_bytes())
    settings = sorted((k, repr(v)) for k, v in jax.config.values.items() if not _NOT_IN_KEY.search(k))
    devices = [(d.id, d.platform, d.device_kind, d.process_index) for d in jax.devices()]
    return repr((sys.version, jax.__version__, jaxlib.__version__, flax.__version__, optax.__version__,
                 jax.devices()[0].client.platform_version, devices, os.environ.get("XLA_FLAGS", ""),
                 settings, source.hexdigest()))


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


def _name(fn: Any, args: tuple, static: dict) -> str:
    """The digest an entry is stored under."""
    if "<lambda>" in fn.__qualname__:  # two lambdas of one module would share a name
        raise TypeError(f"{fn.__module__}.{fn.__qualname__}: give the function a name to keep it between runs")
    paths = jax.tree_util.tree_flatten_with_path(args)[0]
    parts = [_environment(), f"{fn.__module__}.{fn.__qualname__}",
             *(f"{k}={_static(v)}" for k, v in sorted(static.items())),
             *(f"{jax.tree_util.keystr(p)}:{_leaf(x)}" for p, x in paths)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


def _path(name: str) -> Path:
    return cache_dir() / "programs" / f"{name}.bin"


def _load(name: str, args: tuple, out: Any) -> Callable | None:
    """The stored executable, or None when it is absent, damaged or does not load."""
    from jax.experimental.serialize_executable import deserialize_and_load

    path = _path(name)
    try:
        blob = path.read_bytes()
        digest, body = blob[:32], blob[32:]
        if hashlib.sha256(body).digest() != digest:
            return None
        payload, device_ids = pickle.loads(body)
        by_id = {d.id: d for d in jax.devices()}
        program = deserialize_and_load(payload, jax.tree_util.tree_structure((args, {})),
                                       jax.tree_util.tree_structure(out),
                                       execution_devices=[by_id[i] for i in device_ids])
        os.utime(path)  # recently used: kept when old entries are pruned
        return program
    except Exception:  # noqa: BLE001  (whatever a damaged entry raises, the program is compiled afresh)
        return None


@contextlib.contextmanager
def _without_xla_cache() -> Iterator[None]:
    """JAX's persistent compilation cache bypassed (through its private switch; where that moved, the cache stays
    on and a hit means nothing is stored). An executable JAX loaded from that cache serializes without its
    functions: its stored copy fails when run (jax 0.10.2 on CPU: 'NOT_FOUND: Function ... not found'). JAX also
    hands out again, without compiling, an executable it already holds in memory, which may be such a loaded one:
    hence only what _compile saw XLA compile is stored."""
    from jax._src import compilation_cache as cc

    lock = getattr(cc, "_cache_initialized_mutex", None)
    if lock is None or not hasattr(cc, "_cache_checked") or not hasattr(cc, "_cache_used"):
        yield
        return
    with lock:
        saved = cc._cache_checked, cc._cache_used
        cc._cache_checked, cc._cache_used = True, False
    try:
        yield
    finally:
        with lock:
            cc._cache_checked, cc._cache_used = saved


def _compile_and_store(name: str, fn: Any, args: tuple, out: Any, static: dict, options: dict | None) -> Callable:
    """Compile, and store the executable for later runs (skipped where it cannot be serialized or written)."""
    from jax.experimental.serialize_executable import serialize

    with _without_xla_cache():
        program, fresh = _compile(fn.lower(*args, **static), options)
    if program.out_tree != jax.tree_util.tree_structure(out):
        raise TypeError(f"{fn.__qualname__}: `out` is shaped {jax.tree_util.tree_structure(out)}, "
                        f"the program returns {program.out_tree}")
    if not fresh:  # only what XLA compiled here and now is stored whole (see _compile)
        return program
    try:
        payload = serialize(program)[0]
        device_ids = [d.id for d in program._executable._unloaded_executable.device_list]
    except (ValueError, NotImplementedError, AttributeError):
        return program
    body = pickle.dumps((payload, device_ids))
    _write(_path(name), hashlib.sha256(body).digest() + body)
    return program


def _write(path: Path, blob: bytes) -> None:
    """Write atomically and prune the least recently used entries; a read-only or full cache is skipped."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            tmp = f.name
            f.write(blob)
        os.replace(tmp, path)
        entries = sorted(path.parent.glob("*.bin"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-MAX_ENTRIES]:
            old.unlink(missing_ok=True)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
