"""Saved programs: a warm run loads what an earlier one compiled, with the same results; damage means a recompile."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax.compile import program_key
from bigram_jax.compile import programs
from bigram_jax.config import FIELDS, RUN_ONLY, Config
from bigram_jax.counts import dense_counts
from bigram_jax.corpus.tokenizers import CharTokenizer
from bigram_jax.model import table_of
from bigram_jax.evaluate import exact_loss
from bigram_jax.sampling import _sample
from bigram_jax.train import init_on, init_state, train_steps

from .conftest import ROOT, run_script


def _name(fn, args, static):
    return program_key.key(fn, args, static)[0]


TIMES = ("tokens_per_second", "elapsed_seconds")  # the metrics that are clock readings


def _as_new_process(monkeypatch) -> None:
    """No program held by this process: neither programs nor JAX (which would hand back the executable it holds,
    and programs stores only what it saw XLA compile)."""
    monkeypatch.setattr(programs, "_LOADED", {})
    jax.clear_caches()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty per-user cache, and no programs held by this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _as_new_process(monkeypatch)
    return tmp_path / "cache" / "bigram_jax" / "programs"


def _tokens(text: str) -> np.ndarray:
    return np.asarray(CharTokenizer.from_text(text).encode(text), np.int32)


def _train(data: np.ndarray, cfg: Config) -> tuple[jax.Array, np.ndarray]:
    """40 steps through the saved-program path: (summed batch losses, the final table)."""
    state = init_state(cfg, 65)
    run = programs.compiled(train_steps, state, data, np.int32(1), out=(state, 0.0), cfg=cfg, mesh=None)
    first = table_of(state.params)
    state, loss = run(state, data, np.int32(40))
    assert first.is_deleted()  # the state is still donated to the loaded program
    return np.asarray(loss), np.asarray(table_of(state.params))


def test_a_stored_program_loads_and_gives_the_same_bits(cache, shakespeare_text, monkeypatch):
    data, cfg = _tokens(shakespeare_text[:20000]), Config(max_iters=40)
    fresh = _train(data, cfg)
    assert len(list(cache.glob("*.bin"))) == 1
    _as_new_process(monkeypatch)
    monkeypatch.setattr(programs, "_compile_and_store", lambda *a: pytest.fail("compiled again"))
    loaded = _train(data, cfg)
    np.testing.assert_array_equal(loaded[0], fresh[0])
    np.testing.assert_array_equal(loaded[1], fresh[1])


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_entry_is_compiled_afresh_and_replaced(cache, shakespeare_text, monkeypatch, damage):
    data, cfg = _tokens(shakespeare_text[:20000]), Config(max_iters=40)
    fresh = _train(data, cfg)
    (entry,) = cache.glob("*.bin")
    blob = bytearray(entry.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x40
    damaged = bytes(blob[: len(blob) // 3] if damage == "truncate" else b"" if damage == "empty" else blob)
    entry.write_bytes(damaged)
    _as_new_process(monkeypatch)
    again = _train(data, cfg)
    np.testing.assert_array_equal(again[1], fresh[1])
    assert entry.read_bytes() != damaged  # rewritten whole
    _as_new_process(monkeypatch)
    monkeypatch.setattr(programs, "_compile_and_store", lambda *a: pytest.fail("the replaced entry did not load"))
    np.testing.assert_array_equal(_train(data, cfg)[1], fresh[1])


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch, shakespeare_text):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    _as_new_process(monkeypatch)
    data, cfg = _tokens(shakespeare_text[:20000]), Config(max_iters=40)
    loss, table = _train(data, cfg)
    assert np.isfinite(loss).all() and np.isfinite(table).all()


def _other(value):
    """A different value of a config field's type."""
    if isinstance(value, str):
        return value + "-elsewhere"
    return value + 7 if isinstance(value, int) else value / 2 + 0.125


def test_run_only_settings_reach_no_program():
    """Programs are stored without the RUN_ONLY fields: changing any of them must leave every program as it is."""
    cfg, V = Config(), 65
    state = init_state(cfg, V)
    data = jax.ShapeDtypeStruct((10000,), jnp.int32)
    base = (train_steps.lower(state, data, np.int32(1), cfg=cfg).as_text(),
            init_on.lower(cfg=cfg, vocab_size=V, mesh=None).as_text())
    assert RUN_ONLY <= set(FIELDS)
    for name in RUN_ONLY:
        other = dataclasses.replace(cfg, **{name: _other(getattr(cfg, name))})
        texts = (train_steps.lower(state, data, np.int32(1), cfg=other).as_text(),
                 init_on.lower(cfg=other, vocab_size=V, mesh=None).as_text())
        assert texts == base, name
        assert _name(train_steps, (state,), {"cfg": other}) == _name(train_steps, (state,), {"cfg": cfg})
    # and the other settings are part of a program's name
    for name in ("learning_rate", "batch_size", "seed", "max_iters"):
        other = dataclasses.replace(cfg, **{name: _other(getattr(cfg, name))})
        assert _name(train_steps, (state,), {"cfg": other}) != _name(train_steps, (state,), {"cfg": cfg})


def test_names_follow_shapes_dtypes_and_shardings():
    params = init_state(Config(), 65).params
    counts = jnp.zeros((65, 65), jnp.float32)
    name = _name(exact_loss, (params, counts), {})
    assert _name(exact_loss, (params, counts.astype(jnp.bfloat16)), {}) != name
    assert _name(exact_loss, (params, jnp.zeros((64, 64))), {}) != name
    assert _name(exact_loss, (params, np.zeros((65, 65), np.float32)), {}) != name  # host, not a device
    assert _name(exact_loss, (params, jnp.ones((65, 65), jnp.float32)), {}) == name  # values do not count


CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the profiles are XLA:CPU options")


@CPU_ONLY
def test_the_profiles_give_the_same_bits_under_their_own_names(cache, shakespeare_text):
    """A profile trades run speed for compile speed, never results: the initial state ("once"), a sample drawn
    from it ("once") and 40 train steps ("loop") are bit-identical to XLA's defaults, each kept apart."""
    data = _tokens(shakespeare_text[:20000])
    trained = []
    for profile in (None, "loop"):
        state = init_state(Config(max_iters=40), 65)
        run = programs.compiled(train_steps, state, data, np.int32(1), out=(state, 0.0), profile=profile,
                                cfg=Config(max_iters=40), mesh=None)
        trained.append(np.asarray(table_of(run(state, data, np.int32(40))[0].params)))
    np.testing.assert_array_equal(trained[0], trained[1])
    assert len(list(cache.glob("*.bin"))) == 2
    cfg = Config()
    abstract = jax.eval_shape(lambda: init_state(cfg, 65))
    states = [programs.run(init_on, out=abstract, profile=p, cfg=cfg, vocab_size=65, mesh=None) for p in (None, "once")]
    tables = [np.asarray(table_of(s.params)) for s in states]
    np.testing.assert_array_equal(tables[0], tables[1])
    assert len(list(cache.glob("*.bin"))) == 4
    key, last, t = jax.random.key(5), np.zeros((3,), np.int32), np.float32(0.9)
    draws = [programs.run(_sample, tables[0], key, last, t, out=(0, 0), profile=p, max_new_tokens=300, top_k=None,
                          sampler="categorical")[0] for p in (None, "once")]
    np.testing.assert_array_equal(np.asarray(draws[0]), np.asarray(draws[1]))
    assert len(set(np.asarray(draws[0]).ravel().tolist())) > 20  # a real draw, not a constant


def test_a_wrong_output_structure_is_refused(cache):
    params = init_state(Config(), 65).params
    with pytest.raises(TypeError, match="out"):
        programs.compiled(exact_loss, params, jnp.zeros((65, 65)), out=(0.0, 0.0))


def test_unstable_static_text_is_refused():
    with pytest.raises(TypeError, match="stable"):
        program_key._static(object())


def test_a_warm_run_lowers_none_of_its_programs(tmp_path):
    """The second of two identical runs (here on 4 devices) loads every program of its own: JAX logs no lowering
    of them, nor of any eager operation (an accelerator compiles each: `jnp.asarray` of the sample was one), and
    the two runs agree to the bit."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "JAX_LOG_COMPILES": "1",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    ours = ("init_on", "train_steps", "exact_loss", "learning_rate", "copy_state", "sample_key", "_sample")
    runs = []
    for i in range(2):
        r = run_script("train.py", "--max-iters", "60", "--eval-interval", "30", "--out-dir", str(tmp_path / f"r{i}"),
                       env=env)
        assert r.returncode == 0, r.stderr
        lowered = {n for n in ours if f"Compiling jit({n})" in r.stderr}
        runs.append((lowered, (tmp_path / f"r{i}" / "metrics.jsonl").read_text()))
    assert runs[0][0] == set(ours)
    assert runs[1][0] == set() and "Compiling " not in r.stderr, r.stderr[-2000:]
    untimed = lambda text: [{k: v for k, v in json.loads(line).items() if k not in TIMES}  # noqa: E731
                            for line in text.splitlines()]
    assert untimed(runs[1][1]) == untimed(runs[0][1])


_AFTER_JAX_CACHE = """
import sys
import time
import jax, numpy as np
from bigram_jax.compile import programs
from bigram_jax.evaluate import exact_loss
from bigram_jax.sampling import _sample
from bigram_jax.model import BigramLanguageModel
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
counts = np.load(sys.argv[2])
params = BigramLanguageModel(65).init(jax.random.key(3), np.zeros((1, 1), np.int32))
if "plain" in sys.argv[3]:  # JAX's own path, with our options: its cache serves this once it holds it
    print(float(exact_loss.lower(params, counts).compile(programs.compile_options(None))(params, counts)))
if "ours" in sys.argv[3]:
    print(float(programs.run(exact_loss, params, counts, out=0.0)))  # JAX hands back the executable it holds
"""


def test_an_executable_jax_already_holds_is_not_stored(tmp_path, shakespeare_text):
    """JAX loads an executable from its persistent cache, then hands the same one to programs when asked to compile
    that computation again: stored, it would fail in the next run ('Function ... not found'). Nothing is stored
    then; the next run compiles and stores its own, and the run after that loads it."""
    (tmp_path / "go.py").write_text(_AFTER_JAX_CACHE)
    np.save(tmp_path / "counts.npy", dense_counts(_tokens(shakespeare_text[:50000]), 65).astype(np.float32))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    stored = tmp_path / "cache" / "bigram_jax" / "programs"
    losses = []
    for what in ("plain", "plain+ours", "ours", "ours"):  # fill JAX's cache, served by it, fresh, loaded
        r = subprocess.run([sys.executable, str(tmp_path / "go.py"), str(tmp_path / "xla"), str(tmp_path / "counts.npy"),
                            what], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        losses += [float(x) for x in r.stdout.split()]
    assert len(list(stored.glob("*.bin"))) == 1
    assert len(losses) == 5 and len(set(losses)) == 1


@CPU_ONLY
def test_an_option_this_jaxlib_does_not_know_falls_back_to_the_defaults(cache, monkeypatch):
    """A later jaxlib may drop an XLA:CPU option of a profile: the program compiles with XLA's defaults instead
    of failing the run, and is kept and loaded as any other."""
    monkeypatch.setitem(programs.CPU_PROFILES, "once", {"xla_cpu_option_no_jaxlib_has": True})
    params, counts = init_state(Config(), 65).params, jnp.ones((65, 65), jnp.float32)
    loss = float(programs.run(exact_loss, params, counts, out=0.0, profile="once"))
    assert len(list(cache.glob("*.bin"))) == 1
    _as_new_process(monkeypatch)
    monkeypatch.setattr(programs, "_compile_and_store", lambda *a: pytest.fail("the kept program did not load"))
    assert float(programs.run(exact_loss, params, counts, out=0.0, profile="once")) == loss


def test_entries_dated_in_the_future_never_push_out_a_new_one(cache, shakespeare_text, monkeypatch):
    """A cache shared with a machine whose clock runs ahead holds entries dated in the future: pruning takes them
    first (their dates say nothing of their use), never the entry just written, so the next run loads it."""
    monkeypatch.setattr(programs, "MAX_ENTRIES", 3)
    cache.mkdir(parents=True)
    ahead = time.time() + 86400
    for i in range(5):
        (cache / f"{i:040d}.bin").write_bytes(b"another machine's entry")
        os.utime(cache / f"{i:040d}.bin", (ahead, ahead))
    data, cfg = _tokens(shakespeare_text[:20000]), Config(max_iters=40)
    fresh = _train(data, cfg)
    assert len(list(cache.glob("*.bin"))) == 3
    _as_new_process(monkeypatch)
    monkeypatch.setattr(programs, "_compile_and_store", lambda *a: pytest.fail("compiled again"))
    np.testing.assert_array_equal(_train(data, cfg)[1], fresh[1])
