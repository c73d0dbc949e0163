"""Compiled programs (bigram_jax/compile/programs.py): kept, loaded bit for bit, lowered for CUDA and TPU."""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from bigram_jax import evaluate, sampling, train
from bigram_jax.checkpoint import integrity
from bigram_jax.checkpoint.manager import copy_state
from bigram_jax.compile import programs
from bigram_jax.config import Config
from bigram_jax.corpus.tokenizers import CharTokenizer
from bigram_jax.counts import dense_counts
from bigram_jax.devices import parallel
from bigram_jax.evaluate import exact_loss
from bigram_jax.model import params_of, table_of
from bigram_jax.run import summary
from bigram_jax.sampling import sample_categorical
from bigram_jax.train import init_on, init_state, train_steps
from tests.conftest import ROOT, run_script

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


@pytest.fixture(scope="module")
def stored(tmp_path_factory, shakespeare_text) -> tuple[str, bytes, tuple]:
    """What a first run leaves: _train's program compiled and stored by a process that held none, into an empty
    cache: (the entry's file name, its bytes, the losses and table that run computed). Read-only for the tests,
    which put the entry into a cache of their own."""
    home = tmp_path_factory.mktemp("stored")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home))
        _as_new_process(mp)
        fresh = _train(_tokens(shakespeare_text[:20000]), Config(max_iters=40))
    entries = list((home / "bigram_jax" / "programs").glob("*.bin"))
    assert len(entries) == 1, entries
    return entries[0].name, entries[0].read_bytes(), fresh


def test_a_stored_program_loads_and_gives_the_same_bits(cache, stored, shakespeare_text, monkeypatch):
    data, cfg = _tokens(shakespeare_text[:20000]), Config(max_iters=40)
    name, blob, fresh = stored
    cache.mkdir(parents=True)
    (cache / name).write_bytes(blob)
    monkeypatch.setattr(programs, "_compile_and_store", lambda *a: pytest.fail("compiled again"))
    loaded = _train(data, cfg)
    np.testing.assert_array_equal(loaded[0], fresh[0])
    np.testing.assert_array_equal(loaded[1], fresh[1])


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_entry_is_compiled_afresh_and_replaced(cache, stored, shakespeare_text, monkeypatch, damage):
    data, cfg = _tokens(shakespeare_text[:20000]), Config(max_iters=40)
    name, blob, fresh = stored
    cache.mkdir(parents=True)
    entry = cache / name
    blob = bytearray(blob)
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
    draws = [programs.run(sample_categorical, tables[0], key, last, t, out=(0, 0), profile=p, max_new_tokens=300,
                          top_k=None)[0] for p in (None, "once")]
    np.testing.assert_array_equal(np.asarray(draws[0]), np.asarray(draws[1]))
    assert len(set(np.asarray(draws[0]).ravel().tolist())) > 20  # a real draw, not a constant


def test_a_wrong_output_structure_is_refused(cache):
    params = init_state(Config(), 65).params
    with pytest.raises(TypeError, match="out"):
        programs.compiled(exact_loss, params, jnp.zeros((65, 65)), out=(0.0, 0.0))


@pytest.mark.e2e
def test_a_warm_run_lowers_none_of_its_programs(tmp_path):
    """The second of two identical runs (here on 4 devices) loads every program of its own: JAX logs no lowering
    of them, nor of any eager operation (an accelerator compiles each: `jnp.asarray` of the sample was one), and
    the two runs agree to the bit."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "JAX_LOG_COMPILES": "1",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    ours = ("init_on", "train_steps", "exact_loss", "learning_rate", "copy_state", "sample_key", "sample_categorical")
    runs = []
    for i in range(2):
        r = run_script("train.py", "--max-iters", "20", "--eval-interval", "10", "--out-dir", str(tmp_path / f"r{i}"),
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


@pytest.mark.e2e
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


def test_the_cpu_compile_options_stay_off_accelerators(monkeypatch):
    """XLA:CPU's options would be unknown options to XLA:GPU or XLA:TPU: a program of any profile is compiled
    with the platform's defaults there."""
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert programs.compile_options("loop") == programs.CPU_PROFILES["loop"]
    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert [programs.compile_options(p) for p in (None, "loop", "once")] == [None, None, None]


PLATFORMS = ("cuda", "tpu")


V = 8192  # a table the 4-device mesh splits by rows, and the sparse exact loss's range (V > 2048)


B, T, N_TOKENS, N_PAIRS = 64, 32, 100_000, 5_000


S = jax.ShapeDtypeStruct


# custom calls the partitioner itself may emit; anything else (a LAPACK kernel, a host callback) is one platform's
PARTITIONER_CALLS = {"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"}


FLOAT64 = re.compile(r"\b(f64|complex<f64>)\b")  # TPUs have no 64-bit floats (and JAX runs with x64 off)


DONOR = re.compile(r"jax\.buffer_donor = true|tf\.aliasing_output")


def _meshes() -> dict[str, object]:
    """The job's one-device mesh (this CPU), and a data=2 x model=2 mesh of 4 devices this process does not
    have: JAX's abstract mesh, which programs see only through its axes, as on a 4-chip slice."""
    one = parallel.make_mesh(Config(), V, jax.devices()[:1])
    four = AbstractMesh((2, 2), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
    return {"1dev": one, "4dev": four}


def _state(cfg: Config, mesh) -> train.TrainState:
    """The train state's shapes, dtypes and shardings on `mesh`, as the job builds it (nothing allocated)."""
    abstract = jax.eval_shape(lambda: train.init_state(cfg, V, params_of(S((V, V), jnp.float32))))
    return parallel.abstract_on(abstract, mesh)


def _replicated(shape: tuple, dtype, mesh) -> S:
    return S(shape, dtype, sharding=NamedSharding(mesh, P()))


def _train_programs(mesh_name: str, mesh) -> dict[str, tuple]:
    """train_steps (device-resident corpus), train_steps_fed (host-fed windows) and init_on, both losses."""
    out = {}
    for loss in ("counts", "gather"):
        cfg = Config(batch_size=B, block_size=T, loss=loss, model_parallel=mesh.shape["model"])
        st = _state(cfg, mesh)
        data = _replicated((N_TOKENS,), jnp.int32, mesh)
        windows = S((train.DRAW_STEPS, B, T + 1), jnp.int32, sharding=NamedSharding(mesh, P(None, "data", None)))
        out[f"train_steps-{loss}-{mesh_name}"] = (train.train_steps, (st, data, np.int32(1)),
                                                  {"cfg": cfg, "mesh": mesh})
        out[f"train_steps_fed-{loss}-{mesh_name}"] = (train.train_steps_fed, (st, windows, np.int32(0), np.int32(1)),
                                                     {"cfg": cfg, "mesh": mesh})
    out[f"init_on-{mesh_name}"] = (train.init_on, (), {"cfg": Config(model_parallel=mesh.shape["model"]),
                                                       "vocab_size": V, "mesh": mesh})
    return out


def _other_programs(mesh_name: str, mesh) -> dict[str, tuple]:
    """Exact losses (dense, sparse), both samplers, checksums, the checkpoint copy, on the state's shardings."""
    st = _state(Config(model_parallel=mesh.shape["model"]), mesh)
    table, key = table_of(st.params), jax.random.key(0)
    pairs = [_replicated((N_PAIRS,), dt, mesh) for dt in (jnp.int32, jnp.int32, jnp.float32)]
    sample = (table, key, np.zeros((4,), np.int32), np.float32(0.8))
    return {
        f"exact_loss-dense-{mesh_name}": (evaluate.exact_loss, (st.params, _replicated((V, V), jnp.float32, mesh)), {}),
        f"exact_loss-sparse-{mesh_name}": (evaluate.sparse_exact_loss,
                                           (table, *pairs, _replicated((V,), jnp.float32, mesh)), {}),
        f"sample-cdf-{mesh_name}": (sampling.sample_cdf, sample, {"max_new_tokens": 50, "top_k": None}),
        f"sample-categorical-{mesh_name}": (sampling.sample_categorical, sample, {"max_new_tokens": 50, "top_k": 10}),
        f"checksums-{mesh_name}": (integrity.word_sums, (jax.tree.leaves(st),), {}),
        f"copy_state-{mesh_name}": (copy_state, (st,), {}),
    }


@functools.cache
def catalogue() -> dict[str, tuple]:
    """Every program a run compiles: {id: (jitted function, arguments, static arguments)}."""
    cosine = Config(lr_schedule="cosine", warmup_iters=10)
    out = {"learning_rate": (train.learning_rate, (np.int32(5),), {"cfg": cosine}),
           "sample_key": (summary.sample_key, (np.uint32(1337),), {}),
           "draw_offsets": (jax.jit(train.draw_offsets, static_argnums=(2, 3)),
                            (jax.random.key(0), np.int32(0), N_TOKENS, Config(batch_size=B, block_size=T)), {})}
    for name, mesh in _meshes().items():
        out |= _train_programs(name, mesh) | _other_programs(name, mesh)
    return out


DONATING = {"train_steps", "train_steps_fed"}  # the state's buffers are reused in place: on a GPU, half the memory


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_every_program_lowers_for_cuda_and_tpu(name: str):
    fn, args, static = catalogue()[name]
    traced = fn.trace(*args, **static)
    for platform in PLATFORMS:
        text = traced.lower(lowering_platforms=(platform,)).as_text()
        assert not FLOAT64.search(text), f"{name} on {platform}: {FLOAT64.search(text).group(0)}"
        calls = set(re.findall(r"custom_call @([\w.]+)", text)) - PARTITIONER_CALLS
        assert not calls, f"{name} on {platform} calls {calls}"
        if name.split("-")[0] in DONATING:  # every leaf of the state (7) is donated, on every platform
            main = next(line for line in text.splitlines() if "func.func public @main(" in line)
            assert len(DONOR.findall(main)) >= 7, f"{name} on {platform}: the state is not donated"
        if name.endswith("4dev"):  # the table's rows stay split over 'model' (Shardy's notation)
            assert '[{"model"}, {}]' in text, f"{name} on {platform}: the table is not split by rows"


def test_a_host_callback_fails_the_lowering():
    """The check's own teeth: a program with a host callback does not lower for another platform."""

    @jax.jit
    def with_callback(x):
        jax.debug.callback(lambda v: None, x)
        return x * 2

    here = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())  # lowers where it would run
    for platform in (p for p in PLATFORMS if p != here):
        with pytest.raises(ValueError, match="platform"):
            with_callback.trace(jnp.ones(3)).lower(lowering_platforms=(platform,))


@pytest.mark.parametrize("name", programs.PRIVATE_CACHE_SWITCH)
def test_each_private_jax_name_programs_relies_on_is_there(name):
    """programs._without_xla_cache switches JAX's persistent cache off through private names of
    jax._src.compilation_cache; where a JAX release moves one, the switch does nothing and a stored program may be
    one that JAX loaded from its cache (and fails when run): a JAX upgrade that drops a name turns this red."""
    from jax._src import compilation_cache as cc

    assert hasattr(cc, name), f"jax {jax.__version__} has no jax._src.compilation_cache.{name}"


@pytest.mark.parametrize("loss", ["counts", "gather"])
def test_a_loaded_programs_arrays_trace_as_a_fresh_ones(tmp_path, monkeypatch, shakespeare_text, loss):
    """A host-fed run lowers its loop with the state that a loaded init_on returned. On jax 0.12 an aval holds
    JAX's 'no layout chosen' singleton, which a stored executable pickled by value: its arrays came back with
    another instance, and the loss's gradient failed to trace ('... so the layouts do not match')."""
    from bigram_jax.config import Config
    from bigram_jax.corpus.tokenizers import CharTokenizer
    from bigram_jax.train import init_on, init_state, train_steps

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(programs, "_LOADED", {})
    jax.clear_caches()
    text = shakespeare_text[:2000]
    data = np.asarray(CharTokenizer.from_text(text).encode(text), np.int32)
    cfg, V = Config(max_iters=40, batch_size=4, block_size=8, loss=loss), int(data.max()) + 1
    abstract = jax.eval_shape(lambda: init_state(cfg, V))
    fresh = programs.run(init_on, out=abstract, profile="once", cfg=cfg, vocab_size=V, mesh=None)
    assert len(list((tmp_path / "cache").rglob("*.bin"))) == 1
    monkeypatch.setattr(programs, "_LOADED", {})  # as a new process: the entry is loaded
    jax.clear_caches()
    monkeypatch.setattr(programs, "_compile_and_store", lambda *a: pytest.fail("compiled again"))
    loaded = programs.run(init_on, out=abstract, profile="once", cfg=cfg, vocab_size=V, mesh=None)
    assert [jax.typeof(x) for x in jax.tree.leaves(loaded)] == [jax.typeof(x) for x in jax.tree.leaves(fresh)]
    train_steps.lower(loaded, data, np.int32(1), cfg=cfg, mesh=None)  # traces value_and_grad of the loss


def test_a_profile_keeps_the_options_this_jaxlib_knows():
    """An option the jaxlib in use lacks (jaxlib 0.12 dropped xla_cpu_use_fusion_emitters) is left out of a
    profile, the others kept: never the whole profile dropped in silence."""
    known = programs.known_options({"xla_backend_optimization_level": 1, "xla_no_such_option_anywhere": True})
    assert known == {"xla_backend_optimization_level": 1}
    assert programs.known_options({"xla_no_such_option_anywhere": True}) is None
