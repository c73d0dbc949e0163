"""Compiled programs kept between runs: a warm start loads each executable instead of tracing, lowering and
compiling it again (that, not XLA's compile, is most of a small job's start-up; JAX's own cache saves only the
compile).

    compiled(train_steps, state, data, n, out=(state, 0.0), cfg=cfg, mesh=mesh)(state, data, n)

An entry's key is everything that shapes the program: this package's source, the versions of Python, jax, jaxlib,
flax and optax, the devices, the host CPU (its model and instruction sets: XLA:CPU compiles for the CPU it runs on),
the backend's settings (XLA_FLAGS, LIBTPU_INIT_ARGS, ...) and JAX's, the function, its static arguments and the
shape, dtype and sharding of every argument (values never: a program is the same for any values). The entry is
stored under a digest of that key and carries the key itself under its checksum (cache.py): an entry that is
damaged, or that sits under another entry's name, is compiled afresh and replaced, never loaded. What the key
cannot see is a module constant patched at run time: code that does that must not come through here. A cache that
cannot be written is skipped. The executables are pickles, trusted as JAX trusts its own cache: they live in the
user's cache folder. Runs of several processes compile as before (each must build the same program).
"""
from __future__ import annotations

import contextlib
import copyreg
import functools
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np

from bigram_jax.compile import program_key
from bigram_jax.store import cache

# XLA:CPU options by what a program is for; elsewhere, and for programs of neither kind, XLA's defaults. Both keep
# the bits and cut compile time; docs/benchmarks.md has the figures.
CPU_PROFILES = {
    # training loops: backend optimization level 1 (XLA's default is 3). A bigram step is a gather, a scatter and
    # elementwise ops: it runs as fast.
    "loop": {"xla_backend_optimization_level": 1},
    # programs that run once or briefly (init, a short sample): level 1 and XLA:CPU's older elemental emitters.
    # They run wide sampling batches slower, hence not the default.
    "once": {"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False},
}
MAX_ENTRIES = 256  # the least recently used entries beyond this many are deleted when one is written
# this process's programs, by name and by the arguments' tree structure. An executable checks the structure of its
# arguments, static fields included (a train state's optimizer and loss); one name can serve several structures.
_LOADED: dict[tuple, Callable] = {}
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


@contextlib.contextmanager
def _watching() -> Iterator[None]:
    """_count listens to JAX's monitoring events only while a program compiles (importing this module, or having
    used it, leaves JAX's listeners as they were)."""
    jax.monitoring.register_event_listener(_count)
    jax.monitoring.register_event_duration_secs_listener(_count)
    try:
        yield
    finally:
        jax.monitoring.unregister_event_listener(_count)
        jax.monitoring.unregister_event_duration_listener(_count)


def compiled(fn: Any, *args: Any, out: Any, profile: str | None = None, **static: Any) -> Callable:
    """`fn` (a jax.jit function) compiled for `args` (arrays, or jax.ShapeDtypeStruct with shardings) and the
    static keyword arguments; call it with arrays like `args`. `out` is any pytree shaped as fn's output: a
    loaded executable takes its output structure from it (saving one is checked against it). `profile`: 'loop'
    or 'once', what the program is for (see CPU_PROFILES); None, XLA's defaults."""
    options = compile_options(profile)
    if jax.process_count() > 1:  # every process must compile the same program at the same time
        return compile_lowered(fn.lower(*args, **static), profile)
    name, text = program_key.key(fn, args, {**static, "compiler_options": options})
    held = (name, jax.tree_util.tree_structure(args))
    with _LOCK:
        if held not in _LOADED:
            entry = (_path(name), {"kind": "program", "name": name, "key": text})
            _LOADED[held] = _load(entry, args, out) or _compile_and_store(entry, fn, args, out, static, options)
        return _LOADED[held]


def run(fn: Any, *args: Any, out: Any, profile: str | None = None, **static: Any) -> Any:
    """compiled(...) called on `args`."""
    return compiled(fn, *args, out=out, profile=profile, **static)(*args)


# a sampling draw of at most this many (token, row entry) pairs is compiled with the 'once' profile: its compile is
# most of its time; a wider draw (64 samples of 2,000 tokens) runs faster with XLA's defaults (docs/benchmarks.md)
QUICK_WORK = 1 << 22


def run_sample(fn: Any, table: Any, key: Any, last: Any, temperature: Any, *, out: Any, max_new_tokens: int,
               top_k: int | None) -> Any:
    """`run` for sampling's programs (sampling.generate's `run`): a short draw is compiled for compile speed."""
    quick = max_new_tokens * last.shape[0] * table.shape[0] <= QUICK_WORK
    return run(fn, table, key, last, temperature, out=out, profile="once" if quick else None,
               max_new_tokens=max_new_tokens, top_k=top_k)


def compile_options(profile: str | None) -> dict | None:
    """XLA's options asked for by a program of this profile on this platform (None: XLA's defaults). The program's
    key holds these and jaxlib's version: which of them that jaxlib knows follows from the two (`known_options`)."""
    return CPU_PROFILES[profile] if profile is not None and jax.default_backend() == "cpu" else None


def known_options(options: dict | None) -> dict | None:
    """The options that the jaxlib in use knows, each asked once per process (a release can drop one: jaxlib 0.12
    no longer has xla_cpu_use_fusion_emitters). The others are left out, not the whole profile."""
    kept = {k: v for k, v in (options or {}).items() if _knows(k, v)}
    return kept or None


def _probe(x: jax.Array) -> jax.Array:
    return x + 1


@functools.cache
def _knows(option: str, value: Any) -> bool:
    """Whether XLA takes `option`: a trivial program compiled with it (an unknown one is refused before compiling)."""
    try:
        jax.jit(_probe).lower(np.float32(0)).compile({option: value})
    except jax.errors.JaxRuntimeError as e:
        if "No such compile option" not in str(e):
            raise
        return False
    return True


def compile_lowered(lowered: Any, profile: str | None) -> Any:
    """A jax Lowered compiled with a profile's options (for code that times compiles: the bench)."""
    return _compile(lowered, compile_options(profile), None)[0]


def _compile(lowered: Any, options: dict | None, fn: Any) -> tuple[Any, bool]:
    """(lowered.compile with the known `options`, whether XLA compiled it here and now: JAX hands back an executable
    it already holds in memory without compiling, and that one may have come from its persistent cache, see
    _without_xla_cache)."""
    target = f"jit({fn.__name__})" if fn is not None else None  # the name JAX's compile events give it
    options = known_options(options)
    names, hits_before = _seen()
    n = len(names)
    with _watching():
        program = lowered.compile(options)
    names, hits = _seen()
    return program, target is not None and names[n:].count(target) == 1 and hits == hits_before


Entry = tuple[Path, dict]  # where a program's entry lives, and the key it must carry (cache.py)


def _path(name: str) -> Path:
    return cache.cache_dir() / "programs" / f"{name}.bin"


def _load(entry: Entry, args: tuple, out: Any) -> Callable | None:
    """The stored executable, or None when it is absent, damaged, another's or does not load."""
    from jax.experimental.serialize_executable import deserialize_and_load

    found = cache.read(*entry)
    if found is None:
        return None
    try:
        by_id = {d.id: d for d in jax.devices()}
        program = deserialize_and_load(found["payload"].tobytes(), jax.tree_util.tree_structure((args, {})),
                                       jax.tree_util.tree_structure(out),
                                       execution_devices=[by_id[i] for i in found["devices"].tolist()])
        os.utime(entry[0])  # recently used: kept when old entries are pruned
        return program
    except Exception:  # noqa: BLE001  (whatever a damaged entry raises, the program is compiled afresh)
        return None


# the private names of jax._src.compilation_cache that _without_xla_cache uses (tests/compile checks they exist)
PRIVATE_CACHE_SWITCH = ("_cache_initialized_mutex", "_cache_checked", "_cache_used")


@contextlib.contextmanager
def _without_xla_cache() -> Iterator[None]:
    """JAX's persistent compilation cache bypassed while a program is compiled to be stored.

    Why: an executable that JAX loaded from its own cache serializes without its functions, and the stored copy
    fails when run ('NOT_FOUND: Function ... not found'). The switch is JAX's private one; where it has moved,
    the cache stays on, and _compile's check keeps such an executable out of our store. The switch is
    process-wide: another thread that compiles meanwhile skips JAX's cache too (it compiles; nothing worse)."""
    from jax._src import compilation_cache as cc

    if not all(hasattr(cc, name) for name in PRIVATE_CACHE_SWITCH):
        yield
        return
    lock = cc._cache_initialized_mutex
    with lock:
        saved = cc._cache_checked, cc._cache_used
        cc._cache_checked, cc._cache_used = True, False
    try:
        yield
    finally:
        with lock:
            cc._cache_checked, cc._cache_used = saved


@contextlib.contextmanager
def _auto_layout_by_name() -> Iterator[None]:
    """While a program is serialized, JAX's "no layout chosen" pickles by name.

    Why: jax 0.12's avals hold that object, a singleton compared by identity, and pickle copies it by value. A
    stored program would come back with avals holding a second copy, and so would the arrays it returns; tracing
    with them then fails ('... so the layouts do not match'). Pickled as `Layout.AUTO`, it loads as itself."""
    from jax.experimental.layout import Layout

    kind = type(Layout.AUTO)
    saved = copyreg.dispatch_table.get(kind)
    copyreg.dispatch_table[kind] = lambda _: (getattr, (Layout, "AUTO"))
    try:
        yield
    finally:
        if saved is None:
            copyreg.dispatch_table.pop(kind, None)
        else:
            copyreg.dispatch_table[kind] = saved


def _compile_and_store(entry: Entry, fn: Any, args: tuple, out: Any, static: dict, options: dict | None
                       ) -> Callable:
    """Compile, and store the executable for later runs (skipped where it cannot be serialized or written)."""
    from jax.experimental.serialize_executable import serialize

    with _without_xla_cache():
        program, fresh = _compile(fn.lower(*args, **static), options, fn)
    if program.out_tree != jax.tree_util.tree_structure(out):
        raise TypeError(f"{fn.__qualname__}: `out` is shaped {jax.tree_util.tree_structure(out)}, "
                        f"the program returns {program.out_tree}")
    if not fresh:  # only what XLA compiled here and now is stored whole (see _compile)
        return program
    try:
        with _auto_layout_by_name():
            payload = serialize(program)[0]
        device_ids = [d.id for d in _execution_devices(program)]
    except (ValueError, NotImplementedError):
        return program
    if cache.write(*entry, {"payload": np.frombuffer(payload, np.uint8), "devices": np.array(device_ids)}):
        _prune(entry[0])
    return program


def _execution_devices(program: Any) -> list:
    """The devices a compiled program runs on, in its order, from its arguments' and results' shardings: a mesh's
    devices as the mesh lays them out, else the one device of a single-device program."""
    shardings = jax.tree_util.tree_leaves((program.input_shardings, program.output_shardings))
    for s in shardings:
        if isinstance(s, jax.sharding.NamedSharding):
            return list(s.mesh.devices.flat)
    devices = {d for s in shardings for d in s.device_set}
    if len(devices) != 1:
        raise ValueError(f"cannot tell the order of a program's {len(devices)} devices from its shardings")
    return list(devices)


def _prune(kept: Path) -> None:
    """Delete the least recently used entries beyond MAX_ENTRIES, never `kept` (the one just written). An entry
    dated in the future (another machine's clock, on a shared cache) counts as the oldest: its date says nothing
    of when it was last used, and it would otherwise outlive every entry written after it."""
    now, aged = time.time(), []
    for p in kept.parent.glob("*.bin"):
        try:
            t = p.stat().st_mtime
        except OSError:  # pruned by another process meanwhile
            continue
        if p != kept:
            aged.append((-math.inf if t > now + 60 else t, str(p)))
    for _, old in sorted(aged)[:max(0, len(aged) + 1 - MAX_ENTRIES)]:
        Path(old).unlink(missing_ok=True)
