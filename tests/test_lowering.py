"""Every compiled program lowers for CUDA and for TPU from this CPU (JAX's cross-platform lowering:
`jitted.trace(...).lower(lowering_platforms=...)`), so a host callback, an op or dtype a platform lacks, or a
CPU-only assumption fails in CI, before a GPU or TPU is ever lent.

What lowering proves: JAX has a rule for every op on that platform and the program holds nothing that needs this
host (a callback cannot be lowered for a platform other than the backend's). What it cannot prove: that XLA for
that platform compiles it, fits it or runs it fast; scripts/device_check.py measures that on the device itself.
"""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec as P

from bigram_jax import evaluate, sampling, train
from bigram_jax.checkpoint import integrity
from bigram_jax.devices import parallel
from bigram_jax.run import summary
from bigram_jax.checkpoint.manager import copy_state
from bigram_jax.config import Config
from bigram_jax.model import params_of, table_of

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
        f"sample-cdf-{mesh_name}": (sampling._sample, sample, {"max_new_tokens": 50, "top_k": None, "sampler": "cdf"}),
        f"sample-categorical-{mesh_name}": (sampling._sample, sample,
                                            {"max_new_tokens": 50, "top_k": 10, "sampler": "categorical"}),
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
