"""Program names (bigram_jax/compile/program_key.py): what is in a program's key and what is not."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax.compile import program_key
from bigram_jax.config import FIELDS, RUN_ONLY, Config
from bigram_jax.evaluate import exact_loss
from bigram_jax.train import init_on, init_state, train_steps
from tests.conftest import ok, run_script, train


def _name(fn, args, static):
    return program_key.key(fn, args, static)[0]


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


def test_unstable_static_text_is_refused():
    with pytest.raises(TypeError, match="stable"):
        program_key._static(object())


@pytest.mark.usefixtures("own_cache")
def test_the_program_key_sees_the_host_cpu(monkeypatch):
    """Issue 20, case 6 (in-process): host_cpu() names the CPU, is part of the environment every program name
    holds, and another CPU gives the same function and arguments another name."""
    from bigram_jax.compile import program_key
    from bigram_jax.config import Config
    from bigram_jax.train import learning_rate

    args, static = (np.int32(0),), {"cfg": Config()}
    program_key._fixed.cache_clear()
    try:
        cpu = program_key.host_cpu()
        assert isinstance(cpu, str) and cpu and cpu in program_key.environment()
        info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        model = [x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("model name")]
        assert not model or model[0] in cpu, (model, cpu)
        here = program_key.key(learning_rate, args, static)[0]
        monkeypatch.setattr(program_key, "host_cpu", lambda: cpu + " (another)")
        program_key._fixed.cache_clear()
        assert program_key.key(learning_rate, args, static)[0] != here
    finally:
        monkeypatch.undo()
        program_key._fixed.cache_clear()


@pytest.mark.usefixtures("own_cache")
def test_the_program_key_sees_a_jax_setting_changed_after_the_first_program():
    """JAX's settings are read for every key, not once: a precision set after the first program names others."""
    import jax

    from bigram_jax.compile import program_key
    from bigram_jax.config import Config
    from bigram_jax.train import learning_rate

    args, static = (np.int32(0),), {"cfg": Config()}
    before = program_key.key(learning_rate, args, static)[0]
    jax.config.update("jax_default_matmul_precision", "highest")
    try:
        assert program_key.key(learning_rate, args, static)[0] != before
    finally:
        jax.config.update("jax_default_matmul_precision", None)
    assert program_key.key(learning_rate, args, static)[0] == before


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
def test_the_program_key_sees_the_backend_settings(tmp_path, own_cache):
    """Issue 20, case 6 (processes): LIBTPU_INIT_ARGS set makes a warmed cache store new programs; the same run
    without it again stores none. (Processes: the backend's settings are read once per process, and what each
    process stores is counted.)"""
    programs = own_cache / "bigram_jax" / "programs"
    count = lambda: len(list(programs.glob("*.bin")))  # noqa: E731
    args = ["--max-iters", "10", "--sample-tokens", "0", "--eval-interval", "10"]
    ok(train(tmp_path / "warm", *args))
    warm = count()
    ok(run_script("train.py", "--out-dir", str(tmp_path / "tpu"), *args, env={"LIBTPU_INIT_ARGS": "--foo"}))
    flagged = count()
    ok(train(tmp_path / "again", *args))
    assert warm > 0 and flagged > warm and count() == flagged, (warm, flagged, count())
