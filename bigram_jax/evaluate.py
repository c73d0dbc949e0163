"""Exact full-split losses from count matrices, the best-possible floors, and the lecture's estimate."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax.data import get_batch
from bigram_jax.model import BigramLanguageModel


def split_counts(data: np.ndarray, vocab_size: int) -> np.ndarray:
    """(V, V) float64 counts of every transition data[i] -> data[i+1] in a split, counted once."""
    flat = data[:-1].astype(np.int64) * vocab_size + data[1:]
    return np.bincount(flat, minlength=vocab_size * vocab_size).astype(np.float64).reshape(vocab_size, vocab_size)


@functools.partial(jax.jit, static_argnums=0)
def exact_loss(model: BigramLanguageModel, params: dict, counts: jax.Array) -> jax.Array:
    """Mean loss over every position of a split, exactly, in O(V^2): the lecture's loss with no sampling."""
    return model.apply(params, counts, method=BigramLanguageModel.loss_from_counts)


def _xent(counts: np.ndarray, probs: np.ndarray) -> float:
    """Mean -log p over the transitions in `counts` (0 * log 0 taken as 0)."""
    mask = counts > 0
    return float(-(counts[mask] * np.log(probs[mask])).sum() / counts.sum())


def smoothed_table(train_counts: np.ndarray, alpha: float) -> np.ndarray:
    """Add-alpha estimate of P(next | current) from train counts; (V, V) rows sum to 1."""
    c = train_counts + alpha
    return c / c.sum(axis=1, keepdims=True)


def floor_train(train_counts: np.ndarray) -> float:
    """The lowest train loss any bigram table can reach: the count-based maximum-likelihood table."""
    rows = train_counts.sum(axis=1, keepdims=True)
    return _xent(train_counts, train_counts / np.maximum(rows, 1))


def best_alpha(train_counts: np.ndarray, val_counts: np.ndarray) -> float:
    """The add-alpha smoothing of the train table that is best on val (golden-section search in log alpha)."""
    f = lambda la: _xent(val_counts, smoothed_table(train_counts, float(np.exp(la))))  # noqa: E731
    lo, hi = np.log(1e-6), np.log(1e3)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    return float(np.exp((lo + hi) / 2))


def floor_val(train_counts: np.ndarray, val_counts: np.ndarray) -> tuple[float, float]:
    """(val loss, alpha) of the best add-alpha-smoothed train table: the best a table estimated from train reaches."""
    alpha = best_alpha(train_counts, val_counts)
    return _xent(val_counts, smoothed_table(train_counts, alpha)), alpha


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def estimate_loss(model: BigramLanguageModel, params: dict, key: jax.Array, data: jax.Array,
                  batch_size: int, block_size: int, eval_iters: int = 200) -> jax.Array:
    """The lecture's estimate_loss for one split: the mean loss of `eval_iters` random batches."""

    def one(k: jax.Array) -> jax.Array:
        x, y = get_batch(k, data, batch_size, block_size)
        return model.apply(params, x, y)[1]

    return jnp.mean(jax.vmap(one)(jax.random.split(key, eval_iters)))
