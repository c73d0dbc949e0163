"""The lecture's bigram.py in JAX, top to bottom: read the text, batch it, train the bigram table, sample.

    python -m bigram_jax.lecture [input.txt]

prints what the lecture's script prints: the 200-batch loss estimate every 300 steps, then 500 sampled characters.
Everything else in bigram_jax is this loop made exact, fast and resumable (train.py: the same steps fused into
one compiled loop; run/job.py: the whole job). The model, the batches, the estimate and the sampler are the
core's own (model.py, data.py, evaluate.py, sampling.py), so what is read here is what every run computes.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import optax

from bigram_jax.data import get_batch
from bigram_jax.evaluate import estimate_loss
from bigram_jax.model import BigramLanguageModel
from bigram_jax.sampling import generate

# hyperparameters: the lecture's
batch_size = 32  # B: how many independent sequences are processed in parallel
block_size = 8  # T: the length of each sequence (the model itself looks at one token only)
max_iters = 3000
eval_interval = 300
learning_rate = 1e-2
eval_iters = 200
seed = 1337


def make_train_step(model: BigramLanguageModel, optimizer: optax.GradientTransformation):
    """One AdamW step on one batch, as a pure function compiled once: (params, opt_state, key, data) -> the new
    params and opt_state, and the batch loss. The key draws the batch, as torch's global generator does."""

    def loss_fn(params, x, y):
        _, loss = model.apply(params, x, y)  # logits (B*T, C), mean cross-entropy
        return loss

    @jax.jit
    def train_step(params, opt_state, key, data):
        x, y = get_batch(key, data, batch_size, block_size)  # (B, T), (B, T)
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def train(model, params, train_data, val_data, data_key, eval_key, iters=max_iters, log=print):
    """The lecture's loop: every eval_interval steps the mean loss of eval_iters random batches of each split,
    then one step. Step s's batch is drawn with fold_in(data_key, s), so a step's batch depends on the step
    alone (the fused loop in train.py draws the very same ones); the estimates draw theirs from eval_key."""
    optimizer = optax.adamw(learning_rate, weight_decay=0.01)  # torch's AdamW default decay; optax's is 1e-4
    opt_state = optimizer.init(params)
    train_step = make_train_step(model, optimizer)
    for iter in range(iters):
        if iter % eval_interval == 0:  # every once in a while evaluate the loss on train and val sets
            k_train, k_val = jax.random.split(jax.random.fold_in(eval_key, iter))
            losses = {"train": estimate_loss(model, params, k_train, train_data, batch_size, block_size, eval_iters),
                      "val": estimate_loss(model, params, k_val, val_data, batch_size, block_size, eval_iters)}
            log(f"step {iter}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        params, opt_state, loss = train_step(params, opt_state, jax.random.fold_in(data_key, iter), train_data)
    return params, opt_state


def main(path: str | None = None) -> None:
    """The lecture's script: tinyshakespeare (or the text at `path`), 3000 steps, 500 characters."""
    if path is None:
        from bigram_jax.corpus.files import (
            resolve_corpus,  # a local copy, the cache, else a verified download
        )

        path = resolve_corpus("tinyshakespeare")
    with open(path, encoding="utf-8") as f:
        text = f.read()

    # here are all the unique characters that occur in this text
    chars = sorted(set(text))
    vocab_size = len(chars)
    # a mapping from characters to integers and back
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    encode = lambda s: [stoi[c] for c in s]  # noqa: E731  (a string -> a list of integers)
    decode = lambda ids: "".join(itos[i] for i in ids)  # noqa: E731  (a list of integers -> a string)

    # train and test splits: the first 90% trains, the rest validates
    data = jnp.array(encode(text), dtype=jnp.int32)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]

    params_key, data_key = jax.random.split(jax.random.key(seed))
    model = BigramLanguageModel(vocab_size)
    params = model.init(params_key, jnp.zeros((1, 1), jnp.int32))  # the (C, C) table, N(0, 1) as torch's
    eval_key = jax.random.fold_in(jax.random.key(seed), 2)  # apart from the table's, the batches' and the sample's
    params, _ = train(model, params, train_data, val_data, data_key, eval_key)

    # generate from the model: 500 characters after a context of id 0 ('\n' in tinyshakespeare)
    context = jnp.zeros((1, 1), jnp.int32)
    sample_key = jax.random.fold_in(jax.random.key(seed), 1)
    print(decode(generate(params, sample_key, context, max_new_tokens=500)[0].tolist()))


if __name__ == "__main__":
    main(*sys.argv[1:2])
