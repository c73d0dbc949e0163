"""bigram_jax/lecture.py: the lecture's script, and the fused training loop checked against its plain loop."""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax import lecture
from bigram_jax.config import Config
from bigram_jax.model import BigramLanguageModel, table_of
from bigram_jax.train import init_state, train_steps


@pytest.mark.parametrize("loss", ["gather", "counts"])
def test_fused_loop_equals_the_lectures_loop(loss, shakespeare):
    """The fused, compiled loop (train.train_steps, cut into chunks of any length) reaches the state of the lecture's
    Python loop: bit for bit with the lecture's own loss (gather), within float32 rounding with the counts loss."""
    _, train, val = shakespeare
    cfg = Config(loss=loss)
    data = jnp.asarray(train)
    params_key, data_key = jax.random.split(jax.random.key(cfg.seed))  # as init_state splits the seed
    model = BigramLanguageModel(65)
    params = model.init(params_key, jnp.zeros((1, 1), jnp.int32))
    lines = []
    params, opt_state = lecture.train(model, params, data, jnp.asarray(val), data_key,
                                      jax.random.key(2), iters=80, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("step 0: train loss 4.")  # the estimate at step 0 only

    fused = init_state(cfg, 65)
    fused, _ = train_steps(fused, data, jnp.int32(20), cfg)
    fused, _ = train_steps(fused, data, jnp.int32(60), cfg)  # another length, across a 64-step draw
    assert int(fused.step) == 80
    adam = fused.opt_state[0]  # optax.adamw: (ScaleByAdamState, ...)
    pairs = [(table_of(fused.params), table_of(params)), (table_of(adam.mu), table_of(opt_state[0].mu)),
             (table_of(adam.nu), table_of(opt_state[0].nu))]
    for got, want in pairs:
        if loss == "gather":
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        else:
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
    assert not np.array_equal(np.asarray(table_of(params)), np.asarray(table_of(model.init(params_key, jnp.zeros((1, 1), jnp.int32)))))


@pytest.mark.e2e
def test_python_m_lecture_prints_the_lectures_lines(shakespeare_path):
    """`python -m bigram_jax.lecture FILE`: ten estimate lines (steps 0, 300, ..., 2700) falling towards the bigram
    floor, then 500 sampled characters of the text's own alphabet."""
    out = subprocess.run([sys.executable, "-m", "bigram_jax.lecture", str(shakespeare_path)], capture_output=True,
                         text=True, timeout=600, check=True).stdout
    *steps, sample = out.split("\n", 10)
    assert [s.split(":")[0] for s in steps] == [f"step {i}" for i in range(0, 3000, 300)]
    val = [float(s.rsplit(" ", 1)[1]) for s in steps]
    assert val[0] > 4.5 and 2.4 < val[-1] < 2.6  # from ln(65)-ish to near the floor (about 2.45)
    assert sample[0] == "\n" and sample[-1] == "\n"  # the context (id 0, '\n'), then print's own line end
    assert len(sample) == 502 and set(sample) <= set(shakespeare_path.read_text())


@pytest.mark.e2e
def test_importing_the_lecture_loads_no_machinery():
    """The front door imports the core alone: no compiled-program cache, run folder, checkpoints or commands."""
    code = ("import sys, bigram_jax.lecture; print(sorted(m for m in sys.modules if m.startswith(("
            "'bigram_jax.compile', 'bigram_jax.run', 'bigram_jax.checkpoint', 'bigram_jax.cli', 'orbax'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"
