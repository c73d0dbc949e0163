"""The bigram statistics: how often token j follows token i, counted from one pair id per transition.

One helper, `pair_ids`, names each transition i -> j by the integer i * V + j; every count below is a histogram
of those ids, over a different span of tokens:
- `dense_counts`: a whole split on the host, (V, V) float64 (exact evaluation and floors for small V);
- `PairCounts` (in corpus.py): the same, sparse, for any V;
- `batch_counts`: one batch (x, y) inside jit, (V, V) (the counts loss);
- `window_counts`: K steps' batches at once from their window starts, (K, V, V) (the fused train loop);
- `sequence_counts`: along the rows of sampled sequences, (V, V) (the sampler's chi-square checks).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def pair_ids(prev, nxt, vocab_size: int):
    """i * V + j for each transition prev -> nxt; numpy or JAX in, the same kind out (int64 on the host)."""
    if isinstance(prev, np.ndarray):
        prev = prev.astype(np.int64)  # V^2 outgrows int32 past V = 46,340
    return prev * vocab_size + nxt


def dense_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """(V, V) float64 counts of every transition tokens[i] -> tokens[i+1] of a split, counted once."""
    flat = pair_ids(tokens[:-1], tokens[1:], vocab_size)
    return np.bincount(flat, minlength=vocab_size * vocab_size).astype(np.float64).reshape(vocab_size, vocab_size)


def sequence_counts(seqs: np.ndarray, vocab_size: int) -> np.ndarray:
    """(V, V) integer counts of token j following token i along each row of `seqs` (B, L)."""
    seqs = np.asarray(seqs)
    flat = pair_ids(seqs[:, :-1].reshape(-1), seqs[:, 1:].reshape(-1), vocab_size)
    return np.bincount(flat, minlength=vocab_size * vocab_size).reshape(vocab_size, vocab_size)


def batch_counts(x: jax.Array, y: jax.Array, vocab_size: int, dtype=jnp.float32) -> jax.Array:
    """C[i, j] = how many times token j follows token i in the batch (x, y), each (B, T); (V, V), inside jit."""
    flat = pair_ids(x.reshape(-1), y.reshape(-1), vocab_size)  # (B*T,)
    return jnp.bincount(flat, length=vocab_size * vocab_size).astype(dtype).reshape(vocab_size, vocab_size)


def window_counts(pairs: jax.Array, ix: jax.Array, block_size: int, vocab_size: int) -> jax.Array:
    """(K, V, V) counts of K steps' batches from their window starts ix (K, B), in one scatter.

    `pairs` (N-1,) holds `pair_ids` of every position of the corpus: a window of T pair ids is a batch's (x, y).
    """
    K, V = ix.shape[0], vocab_size
    w = jax.vmap(jax.vmap(lambda i: jax.lax.dynamic_slice(pairs, (i,), (block_size,))))(ix)  # (K, B, T)
    flat = (w + (jnp.arange(K) * V * V)[:, None, None]).reshape(-1)  # step k's ids offset into its own table
    return jnp.zeros(K * V * V, jnp.int32).at[flat].add(1, mode="promise_in_bounds").reshape(K, V, V)
