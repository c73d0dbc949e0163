"""Train state, the AdamW optimizer, and the pure jitted train step (fused many to a call)."""
from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bigram_jax.config import Config
from bigram_jax.counts import pair_ids, window_counts
from bigram_jax.data import batch_offsets, get_batch, windows
from bigram_jax.loss import Batch, LossFn, make_loss, resolve_loss
from bigram_jax.model import BigramLanguageModel, table_of
from bigram_jax.parallel import constrain


class TrainState(train_state.TrainState):
    """flax's TrainState (step, params, optimizer and its state) plus the run's data key and its loss.

    The pytree leaves are step, params, opt_state and key, as in every checkpoint bigram-jax has written.
    """

    key: jax.Array  # typed PRNG key; the batch of step s is drawn with fold_in(key, s)
    loss_fn: LossFn = flax.struct.field(pytree_node=False)  # (params, batch) -> mean loss


def lr_schedule(cfg: Config) -> optax.Schedule:
    """Constant (the lecture), or linear warmup then cosine decay to min_lr over max_iters."""
    if cfg.lr_schedule == "constant":
        return optax.constant_schedule(cfg.learning_rate)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_iters,
        decay_steps=max(cfg.max_iters, 1), end_value=cfg.min_lr)


@functools.cache  # one object per config: states built from one config share a pytree structure
def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """AdamW with torch's defaults (optax's weight decay default is 1e-4; torch's is 0.01), optional clipping."""
    adamw = optax.adamw(lr_schedule(cfg), b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw


def init_state(cfg: Config, vocab_size: int, params: Any = None) -> TrainState:
    """Fresh state from the seed: N(0, 1) table (unless `params` is given), zero moments, step 0."""
    params_key, data_key = jax.random.split(jax.random.key(cfg.seed))
    model = _model(vocab_size)
    if params is None:
        params = model.init(params_key, jnp.zeros((1, 1), jnp.int32))
    state = TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(cfg), key=data_key,
                              loss_fn=_loss_fn(model, cfg.loss, cfg.batch_size, cfg.block_size))
    return state.replace(step=jnp.zeros((), jnp.int32))  # create() starts at a Python 0; checkpoints hold int32


# as make_optimizer: the same objects for the same settings, so equal states have equal pytree structures
_model = functools.cache(BigramLanguageModel)
_loss_fn = functools.cache(make_loss)


def batch_at(key: jax.Array, step: jax.Array, data: jax.Array, cfg: Config) -> Batch:
    """The batch of step `step`: a pure function of (run key, step), so a resumed run sees the same stream."""
    x, y = get_batch(jax.random.fold_in(key, step), data, cfg.batch_size, cfg.block_size)
    return {"x": x, "y": y}


def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    """One AdamW step on `batch` ({'x', 'y'} or {'counts'}); returns the new state and {'loss': batch loss}."""
    loss, grads = jax.value_and_grad(state.loss_fn)(state.params, batch)
    return state.apply_gradients(grads=grads), {"loss": loss}


DRAW_STEPS = 64  # batch offsets are drawn for this many steps at once: one vectorized RNG call, not 64 small ones
HOIST_ELEMENTS = 1 << 22  # count all DRAW_STEPS batches in one scatter when their tokens and tables fit this


@functools.partial(jax.jit, static_argnames=("cfg", "mesh"), donate_argnums=0)
def train_steps(state: TrainState, data: jax.Array, num_steps: jax.Array, cfg: Config,
                mesh: Mesh | None = None) -> tuple[TrainState, jax.Array]:
    """`num_steps` train steps fused into one compiled loop; returns the state and the sum of batch losses.

    Step s trains on `batch_at(state.key, s, ...)`, whatever the chunking: `num_steps` is traced, so chunks
    of any length share one compilation and give bit-identical results. With a `mesh`, each step's global
    batch is drawn whole from the same key and split along 'data', so any device count sees the same batches.
    """
    table = table_of(state.params)
    B, T, V = cfg.batch_size, cfg.block_size, table.shape[0]
    loss = resolve_loss(cfg.loss, V, B, T)
    end = state.step + num_steps
    pairs = pair_ids(data[:-1], data[1:], V)  # (N-1,): the counts loss reads one pair id per token
    hoist = loss == "counts" and DRAW_STEPS * max(B * T, V * V) <= HOIST_ELEMENTS

    def block(carry):
        st, loss_sum = carry
        steps = st.step + jnp.arange(DRAW_STEPS)
        ix = jax.vmap(lambda s: batch_offsets(jax.random.fold_in(st.key, s), data.shape[0], B, T))(steps)  # (K, B)
        if mesh is not None:  # each device reads its B / dp windows of every step
            ix = jax.lax.with_sharding_constraint(ix, NamedSharding(mesh, P(None, "data")))
        counts = window_counts(pairs, ix, T, V).astype(table.dtype) if hoist else None  # (K, V, V)

        def body(j, c):
            st, loss_sum = c
            if hoist:
                batch = {"counts": counts[j]}
            elif loss == "counts":
                batch = {"counts": window_counts(pairs, ix[j][None], T, V)[0].astype(table.dtype)}
            else:
                x, y = windows(data, ix[j], T)  # (B, T), (B, T)
                batch = {"x": x, "y": y}
            st, metrics = train_step(st, batch)
            return constrain(st, mesh), loss_sum + metrics["loss"]

        return jax.lax.fori_loop(0, jnp.minimum(DRAW_STEPS, end - st.step), body, (st, loss_sum))

    return jax.lax.while_loop(lambda c: c[0].step < end, block, (constrain(state, mesh), jnp.zeros((), table.dtype)))
