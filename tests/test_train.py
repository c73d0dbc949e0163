"""The train step: fused == stepwise, AdamW as torch defines it, schedules and clipping, the lecture's result."""
from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigram_jax import evaluate
from bigram_jax.config import Config
from bigram_jax.counts import dense_counts
from bigram_jax.model import table_of
from bigram_jax.train import batch_at, init_state, lr_schedule, make_optimizer, train_steps


def _table(state) -> np.ndarray:
    return np.asarray(table_of(state.params))


def test_batches_are_keyed_by_step(shakespeare):
    _, train, _ = shakespeare
    cfg, data = Config(), jnp.asarray(train)
    key = init_state(cfg, 65).key
    x1 = batch_at(key, jnp.int32(7), data, cfg)["x"]
    x2 = batch_at(key, jnp.int32(7), data, cfg)["x"]
    x3 = batch_at(key, jnp.int32(8), data, cfg)["x"]
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(x1, x3)


def test_adamw_matches_torch_formula():
    """One step from a known table against torch.optim.AdamW's update written out in numpy (float64)."""
    cfg = Config()
    rng = np.random.default_rng()
    p0, g = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    tx = make_optimizer(cfg)
    params = jnp.asarray(p0, jnp.float32)
    state = tx.init(params)
    p = params
    for _ in range(3):
        upd, state = tx.update(jnp.asarray(g, jnp.float32), state, p)
        p = optax.apply_updates(p, upd)
    q, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t in range(1, 4):  # torch: decay first (lr * 0.01), then the bias-corrected Adam step
        q *= 1 - cfg.learning_rate * 0.01
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        q -= cfg.learning_rate / (1 - 0.9**t) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8)
    np.testing.assert_allclose(np.asarray(p), q, atol=2e-6)


def test_cosine_schedule_and_clipping():
    cfg = Config(lr_schedule="cosine", warmup_iters=10, max_iters=110, min_lr=1e-3, grad_clip=1.0)
    lr = lr_schedule(cfg)
    assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1e-2)
    assert float(lr(60)) == pytest.approx((1e-2 + 1e-3) / 2, rel=1e-4) and float(lr(110)) == pytest.approx(1e-3)
    assert float(lr_schedule(Config())(2999)) == 1e-2
    # clipping: the second of two steps differs once the first gradient's size is clipped away
    def second_update(clip: float) -> np.ndarray:
        tx = make_optimizer(Config(grad_clip=clip, weight_decay=0.0))
        params = jnp.zeros(4)
        st = tx.init(params)
        _, st = tx.update(jnp.full(4, 100.0), st, params)
        upd, _ = tx.update(jnp.ones(4), st, params)
        return np.asarray(upd)

    clipped, raw = second_update(1.0), second_update(0.0)
    # clipped: both gradients have norm 1 -> Adam's step is the full lr; unclipped: a tiny step after a huge one
    np.testing.assert_allclose(clipped, -1e-2, rtol=1e-4)
    np.testing.assert_allclose(raw, -1e-2 * (9.1 / 0.19) / np.sqrt((9.99 + 0.001) / (1 - 0.999**2)), rtol=1e-3)


def test_lecture_run_reaches_its_val_loss(shakespeare):
    """3000 steps at the lecture's settings: exact val loss <= 2.50, above the floor."""
    _, train, val = shakespeare
    cfg = Config()
    state = init_state(cfg, 65)
    state, _ = train_steps(state, jnp.asarray(train), jnp.int32(cfg.max_iters), cfg)
    tc, vc = dense_counts(train, 65), dense_counts(val, 65)
    val_loss = float(evaluate.exact_loss(state.params, jnp.asarray(vc, jnp.float32)))
    train_loss = float(evaluate.exact_loss(state.params, jnp.asarray(tc, jnp.float32)))
    assert val_loss <= 2.50
    assert train_loss > evaluate.floor_train(tc)
    assert val_loss > evaluate.floor_val(tc, vc)[0] - 0.01
