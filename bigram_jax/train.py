"""Train state, the AdamW optimizer, and the pure jitted train step (fused many to a call)."""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bigram_jax.config import Config
from bigram_jax.counts import window_counts
from bigram_jax.data import batch_offsets, get_batch, window_slices
from bigram_jax.devices.parallel import constrain
from bigram_jax.loss import Batch, LossFn, make_loss
from bigram_jax.model import BigramLanguageModel, table_of


class TrainState(train_state.TrainState):
    """flax's TrainState (step, params, optimizer and its state) plus the run's data key and its loss.

    The pytree leaves are step, params, opt_state and key, as in every checkpoint bigram-jax has written.
    """

    key: jax.Array  # typed PRNG key; the batch of step s is drawn with fold_in(key, s)
    loss: str = flax.struct.field(pytree_node=False)  # 'gather' or 'counts': the batch the loss reads
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
    cfg = cfg.for_vocab(vocab_size)  # (a run's config comes decided; a library caller's may say 'auto')
    params_key, data_key = jax.random.split(jax.random.key(cfg.seed))
    model = _model(vocab_size)
    if params is None:
        params = model.init(params_key, jnp.zeros((1, 1), jnp.int32))
    state = TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(cfg), key=data_key,
                              loss=cfg.loss, loss_fn=_loss_fn(model, cfg.loss))
    return state.replace(step=jnp.zeros((), jnp.int32))  # create() starts at a Python 0; checkpoints hold int32


@functools.partial(jax.jit, static_argnames=("cfg", "vocab_size", "mesh"))
def init_on(cfg: Config, vocab_size: int, mesh: Mesh) -> TrainState:
    """init_state compiled as one program, each array created in place on its devices."""
    return constrain(init_state(cfg, vocab_size), mesh)


@functools.partial(jax.jit, static_argnames="cfg")
def learning_rate(step: jax.Array, cfg: Config) -> jax.Array:
    """The schedule's learning rate at `step` (for the logs), as one small program rather than eager ops."""
    return lr_schedule(cfg)(step)


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


def draw_offsets(key: jax.Array, first_step: jax.Array, n_tokens: int, cfg: Config) -> jax.Array:
    """(DRAW_STEPS, B) window starts of the steps first_step, first_step + 1, ...: step s's batch is drawn with
    fold_in(key, s) whoever draws it (the compiled loop, or the host feeding a memory-mapped corpus)."""
    steps = first_step + jnp.arange(DRAW_STEPS)
    return jax.vmap(lambda s: batch_offsets(jax.random.fold_in(key, s), n_tokens, cfg.batch_size, cfg.block_size))(steps)


def _hoist(loss: str, cfg: Config, V: int) -> bool:
    """Count a whole block's batches in one scatter (counts loss, when the block's tokens and tables are small)."""
    return loss == "counts" and DRAW_STEPS * max(cfg.batch_size * cfg.block_size, V * V) <= HOIST_ELEMENTS


LOSS_STEPS = 4096  # train_steps reports each batch loss of its first this-many steps (no job chunk is longer)


def _run_block(carry: tuple, windows_of: Callable, j0: jax.Array, n: jax.Array, first: jax.Array, cfg: Config,
               mesh: Mesh | None) -> tuple:
    """Steps j0 .. j0 + n - 1 of a block, step j training on `windows_of(j)` (B, T + 1); `windows_of(None)`
    gives the whole block's (K, B, T + 1) windows, read only when the block's counts are hoisted. The carry is
    (state, losses): step s's batch loss goes to losses[s - first] (dropped past the end)."""
    st, losses = carry
    table = table_of(st.params)
    V, dtype = table.shape[0], table.dtype
    loss = st.loss
    counts = window_counts(windows_of(None), V).astype(dtype) if _hoist(loss, cfg, V) else None  # (K, V, V)

    def body(j, c):
        st, losses = c
        if counts is not None:
            batch = {"counts": counts[j]}
        elif loss == "counts":
            # counted in the table's dtype where that is exact: one (V, V) array, not an int32 one and its copy
            exact = dtype == jnp.float32 and cfg.batch_size * cfg.block_size < 2**24  # (bfloat16 stops at 256)
            batch = {"counts": window_counts(windows_of(j)[None], V, dtype if exact else jnp.int32)[0].astype(dtype)}
        else:
            w = windows_of(j)  # (B, T + 1)
            batch = {"x": w[:, :-1], "y": w[:, 1:]}  # (B, T), (B, T)
        new, metrics = train_step(st, batch)
        return constrain(new, mesh), losses.at[st.step - first].set(metrics["loss"], mode="drop")

    return jax.lax.fori_loop(j0, j0 + n, body, (st, losses))


@functools.partial(jax.jit, static_argnames=("cfg", "mesh"), donate_argnums=0)
def train_steps(state: TrainState, data: jax.Array, num_steps: jax.Array, cfg: Config,
                mesh: Mesh | None = None) -> tuple[TrainState, jax.Array]:
    """`num_steps` train steps fused into one compiled loop over the corpus `data` on the device(s); returns
    the state and the batch loss of each step, (LOSS_STEPS,) (of the first LOSS_STEPS steps; zeros past
    `num_steps`), for the host to sum in step order: the log does not depend on how a run is cut into calls.

    Step s trains on `batch_at(state.key, s, ...)`, whatever the chunking: `num_steps` is traced, so chunks
    of any length share one compilation and give bit-identical results. With a `mesh`, each step's global
    batch is drawn whole from the same key and split along 'data', so any device count sees the same batches.
    """
    first = state.step
    end = first + num_steps

    def block(carry):
        ix = draw_offsets(carry[0].key, carry[0].step, data.shape[0], cfg)  # (K, B)
        if mesh is not None:  # each device reads its B / dp windows of every step
            ix = jax.lax.with_sharding_constraint(ix, NamedSharding(mesh, P(None, "data")))
        windows_of = lambda j: window_slices(data, ix if j is None else ix[j], cfg.block_size)  # noqa: E731
        return _run_block(carry, windows_of, 0, jnp.minimum(DRAW_STEPS, end - carry[0].step), first, cfg, mesh)

    losses = jnp.zeros((LOSS_STEPS,), table_of(state.params).dtype)
    return jax.lax.while_loop(lambda c: c[0].step < end, block, (constrain(state, mesh), losses))


@functools.partial(jax.jit, static_argnames=("cfg", "mesh"), donate_argnums=0)
def train_steps_fed(state: TrainState, windows: jax.Array, j0: jax.Array, num_steps: jax.Array, cfg: Config,
                    mesh: Mesh | None = None) -> tuple[TrainState, jax.Array]:
    """train_steps for a corpus that stays on the host: steps j0 .. j0 + num_steps - 1 of a block whose
    windows (DRAW_STEPS, B, T + 1) the host gathered from the same offsets (`draw_offsets`). Same losses,
    returned as (DRAW_STEPS,): the batch loss of each step of this call, then zeros."""
    windows_of = lambda j: windows if j is None else windows[j]  # noqa: E731
    losses = jnp.zeros((DRAW_STEPS,), table_of(state.params).dtype)
    return _run_block((constrain(state, mesh), losses), windows_of, j0, num_steps, state.step, cfg, mesh)
