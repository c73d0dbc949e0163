"""Train state, the AdamW optimizer, and the pure jitted train step (fused many to a call)."""
from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bigram_jax.config import Config
from bigram_jax.data import batch_offsets, get_batch, windows
from bigram_jax.loss import make_loss, resolve_loss
from bigram_jax.model import BigramLanguageModel
from bigram_jax.parallel import constrain


class TrainState(flax.struct.PyTreeNode):
    """Everything a run needs to continue: the step, params, optimizer state and the run's data key."""

    step: jax.Array  # int32 scalar: the number of steps taken
    params: Any
    opt_state: Any
    key: jax.Array  # typed PRNG key; the batch of step s is drawn with fold_in(key, s)


def lr_schedule(cfg: Config) -> optax.Schedule:
    """Constant (the lecture), or linear warmup then cosine decay to min_lr over max_iters."""
    if cfg.lr_schedule == "constant":
        return optax.constant_schedule(cfg.learning_rate)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_iters,
        decay_steps=max(cfg.max_iters, 1), end_value=cfg.min_lr)


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """AdamW with torch's defaults (optax's weight decay default is 1e-4; torch's is 0.01), optional clipping."""
    adamw = optax.adamw(lr_schedule(cfg), b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw


def init_state(cfg: Config, vocab_size: int, params: Any = None) -> TrainState:
    """Fresh state from the seed: N(0, 1) table (unless `params` is given), zero moments, step 0."""
    params_key, data_key = jax.random.split(jax.random.key(cfg.seed))
    if params is None:
        model = BigramLanguageModel(vocab_size)
        params = model.init(params_key, jnp.zeros((1, 1), jnp.int32))
    opt_state = make_optimizer(cfg).init(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, key=data_key)


def batch_at(key: jax.Array, step: jax.Array, data: jax.Array, cfg: Config) -> tuple[jax.Array, jax.Array]:
    """The batch of step `step`: a pure function of (run key, step), so a resumed run sees the same stream."""
    return get_batch(jax.random.fold_in(key, step), data, cfg.batch_size, cfg.block_size)


def _update(state: TrainState, loss: jax.Array, grads: Any, cfg: Config) -> tuple[TrainState, dict]:
    """Apply one AdamW update to the state."""
    updates, opt_state = make_optimizer(cfg).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {"loss": loss}


def train_step(state: TrainState, batch: tuple[jax.Array, jax.Array], cfg: Config) -> tuple[TrainState, dict]:
    """One AdamW step on `batch` = (x, y), each (B, T); returns the new state and {'loss': batch loss}."""
    loss_fn = make_loss(BigramLanguageModel(_vocab_size(state)), cfg.loss, cfg.batch_size, cfg.block_size)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, *batch)
    return _update(state, loss, grads, cfg)


def counts_step(state: TrainState, counts: jax.Array, cfg: Config) -> tuple[TrainState, dict]:
    """train_step for loss='counts' given the batch's (V, V) transition counts (same result)."""
    model = BigramLanguageModel(_vocab_size(state))
    loss, grads = jax.value_and_grad(
        lambda p: model.apply(p, counts, method=BigramLanguageModel.loss_from_counts))(state.params)
    return _update(state, loss, grads, cfg)


def _vocab_size(state: TrainState) -> int:
    """V, read off the table's shape."""
    return jax.tree.leaves(state.params)[0].shape[0]


DRAW_STEPS = 64  # batch offsets are drawn for this many steps at once: one vectorized RNG call, not 64 small ones
HOIST_ELEMENTS = 1 << 22  # count all DRAW_STEPS batches in one scatter when their tokens and tables fit this


def block_counts(pairs: jax.Array, ix: jax.Array, block_size: int, vocab_size: int) -> jax.Array:
    """(K, V, V) transition counts of K batches from window starts ix (K, B), one scatter for all K."""
    K, V = ix.shape[0], vocab_size
    w = jax.vmap(jax.vmap(lambda i: jax.lax.dynamic_slice(pairs, (i,), (block_size,))))(ix)  # (K, B, T) pair ids
    flat = (w + (jnp.arange(K) * V * V)[:, None, None]).reshape(-1)
    return jnp.zeros(K * V * V, jnp.int32).at[flat].add(1, mode="promise_in_bounds").reshape(K, V, V)


@functools.partial(jax.jit, static_argnames=("cfg", "mesh"), donate_argnums=0)
def train_steps(state: TrainState, data: jax.Array, num_steps: jax.Array, cfg: Config,
                mesh: Mesh | None = None) -> tuple[TrainState, jax.Array]:
    """`num_steps` train steps fused into one compiled loop; returns the state and the sum of batch losses.

    Step s trains on `batch_at(state.key, s, ...)`, whatever the chunking: `num_steps` is traced, so chunks
    of any length share one compilation and give bit-identical results. With a `mesh`, each step's global
    batch is drawn whole from the same key and split along 'data', so any device count sees the same batches.
    """
    B, T, V = cfg.batch_size, cfg.block_size, _vocab_size(state)
    dtype = jax.tree.leaves(state.params)[0].dtype
    loss = resolve_loss(cfg.loss, V, B, T)
    end = state.step + num_steps
    pairs = data[:-1] * V + data[1:]  # (N-1,) pair id of each position: the counts loss reads one id per token
    hoist = loss == "counts" and DRAW_STEPS * max(B * T, V * V) <= HOIST_ELEMENTS

    def block(carry):
        st, loss_sum = carry
        steps = st.step + jnp.arange(DRAW_STEPS)
        ix = jax.vmap(lambda s: batch_offsets(jax.random.fold_in(st.key, s), data.shape[0], B, T))(steps)  # (K, B)
        if mesh is not None:  # each device reads its B / dp windows of every step
            ix = jax.lax.with_sharding_constraint(ix, NamedSharding(mesh, P(None, "data")))
        counts = block_counts(pairs, ix, T, V).astype(dtype) if hoist else None  # (K, V, V)

        def body(j, c):
            st, loss_sum = c
            if hoist:
                st, metrics = counts_step(st, counts[j], cfg)
            elif loss == "counts":
                st, metrics = counts_step(st, block_counts(pairs, ix[j][None], T, V)[0].astype(dtype), cfg)
            else:
                st, metrics = train_step(st, windows(data, ix[j], T), cfg)
            return constrain(st, mesh), loss_sum + metrics["loss"]

        return jax.lax.fori_loop(0, jnp.minimum(DRAW_STEPS, end - st.step), body, (st, loss_sum))

    return jax.lax.while_loop(lambda c: c[0].step < end, block, (constrain(state, mesh), jnp.zeros((), dtype)))
