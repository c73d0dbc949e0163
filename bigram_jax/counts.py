"""The bigram statistics: how often token j follows token i, counted from one pair id per transition.

One helper, `pair_ids`, names each transition i -> j by the integer i * V + j; every count below is a histogram
of those ids, over a different span of tokens:
- `dense_counts`: a whole split on the host, (V, V) float64 (exact evaluation and floors for small V);
- `PairCounts`: the same, sparse, for any V;
- `batch_counts`: one batch (x, y) inside jit, (V, V) (the counts loss);
- `window_counts`: K steps' batches at once from their windows, (K, V, V) (the fused train loop);
- `sequence_counts`: along the rows of sampled sequences, (V, V) (the sampler's chi-square checks);
- `PairCounter`: a whole file, streamed in chunks, dense while V x V is small, sparse beyond.
"""
from __future__ import annotations

import dataclasses

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


@dataclasses.dataclass(frozen=True)
class PairCounts:
    """Sparse transition counts of a split: sorted unique pair ids i * V + j and how often each occurs.

    Dense (V, V) counts of a 50,257-token vocabulary would take 20 GB; a split has at most one pair per token.
    """

    ids: np.ndarray  # (nnz,) int64, sorted
    n: np.ndarray  # (nnz,) float64
    vocab_size: int

    @classmethod
    def of(cls, tokens: np.ndarray, vocab_size: int) -> PairCounts:
        """Count every transition tokens[i] -> tokens[i+1] of a split once."""
        flat = pair_ids(tokens[:-1], tokens[1:], vocab_size)
        if 0 < vocab_size * vocab_size <= max(len(flat), 1 << 16):  # a table no bigger than the split: count, not sort
            return cls.from_dense(np.bincount(flat, minlength=vocab_size**2).reshape(vocab_size, vocab_size))
        ids, n = np.unique(flat, return_counts=True)
        return cls(ids, n.astype(np.float64), vocab_size)

    @classmethod
    def from_dense(cls, counts: np.ndarray) -> PairCounts:
        """The sparse form of a (V, V) count matrix."""
        ids = np.flatnonzero(counts)
        return cls(ids.astype(np.int64), counts.reshape(-1)[ids].astype(np.float64), counts.shape[0])

    @property
    def rows(self) -> np.ndarray:
        """(nnz,) current token of each pair."""
        return self.ids // self.vocab_size

    @property
    def cols(self) -> np.ndarray:
        """(nnz,) next token of each pair."""
        return self.ids % self.vocab_size

    def row_totals(self) -> np.ndarray:
        """(V,) how often each token is followed by anything."""
        return np.bincount(self.rows, weights=self.n, minlength=self.vocab_size)

    def dense(self) -> np.ndarray:
        """(V, V) float64 count matrix."""
        out = np.zeros(self.vocab_size * self.vocab_size)
        out[self.ids] = self.n
        return out.reshape(self.vocab_size, self.vocab_size)


def sequence_counts(seqs: np.ndarray, vocab_size: int) -> np.ndarray:
    """(V, V) integer counts of token j following token i along each row of `seqs` (B, L)."""
    seqs = np.asarray(seqs)
    flat = pair_ids(seqs[:, :-1].reshape(-1), seqs[:, 1:].reshape(-1), vocab_size)
    return np.bincount(flat, minlength=vocab_size * vocab_size).reshape(vocab_size, vocab_size)


def batch_counts(x: jax.Array, y: jax.Array, vocab_size: int, dtype=jnp.float32) -> jax.Array:
    """C[i, j] = how many times token j follows token i in the batch (x, y), each (B, T); (V, V), inside jit."""
    flat = pair_ids(x.reshape(-1), y.reshape(-1), vocab_size)  # (B*T,)
    return jnp.bincount(flat, length=vocab_size * vocab_size).astype(dtype).reshape(vocab_size, vocab_size)


def window_counts(w: jax.Array, vocab_size: int, dtype=jnp.int32) -> jax.Array:
    """(K, V, V) counts of K steps' batches given their windows w (K, B, T + 1), in one scatter. A float `dtype`
    counts in it directly (exact while a batch has fewer than 2**24 positions), with no integer table beside it."""
    K, V = w.shape[0], vocab_size
    ids = pair_ids(w[..., :-1], w[..., 1:], V)  # (K, B, T)
    flat = (ids + (jnp.arange(K) * V * V)[:, None, None]).reshape(-1)  # step k's ids offset into its own table
    one = jnp.ones((), dtype)
    return jnp.zeros(K * V * V, dtype).at[flat].add(one, mode="promise_in_bounds").reshape(K, V, V)


DENSE_MAX_PAIRS = 1 << 25  # a dense int64 table up to 256 MB (V <= 5792); past it the counts are kept sparse


class PairCounter:
    """Counts transitions fed chunk by chunk, in memory bounded by the counts themselves."""

    def __init__(self, stride: int):
        self.stride = stride  # pair id = i * stride + j
        self.table = np.zeros(stride * stride, np.int64) if stride * stride <= DENSE_MAX_PAIRS else None
        self.ids, self.n = np.zeros(0, np.int64), np.zeros(0, np.int64)  # sparse: sorted ids, their counts
        self._buf: np.ndarray | None = None

    def add(self, prev: np.ndarray, nxt: np.ndarray) -> None:
        """Count the transitions prev[k] -> nxt[k]."""
        if self.table is not None:
            for lo in range(0, len(prev), self.STEP):
                self._add_dense(prev[lo:lo + self.STEP], nxt[lo:lo + self.STEP])
            return
        u, c = np.unique(pair_ids(prev, nxt, self.stride), return_counts=True)
        both, where = np.unique(np.concatenate([self.ids, u]), return_inverse=True)
        self.n = np.bincount(where, weights=np.concatenate([self.n, c]), minlength=len(both)).astype(np.int64)
        self.ids = both

    STEP = 1 << 22  # transitions per dense update: the int32 id buffer (16 MB) is reused, never reallocated

    def _add_dense(self, prev: np.ndarray, nxt: np.ndarray) -> None:
        """Dense update: int32 pair ids into a reused buffer, then numpy's unbuffered add.at. Neither a fresh V*V
        result per call (bincount) nor fresh 8-byte ids: several times their rate."""
        if self._buf is None:
            self._buf = np.empty(self.STEP, np.int32)
        ids = self._buf[:len(prev)]
        np.multiply(prev, self.stride, out=ids, dtype=np.int32, casting="unsafe")
        np.add(ids, nxt, out=ids, casting="unsafe")
        np.add.at(self.table, ids, 1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted pair ids, counts), int64, of every pair seen at least once."""
        if self.table is None:
            return self.ids, self.n
        ids = np.flatnonzero(self.table)
        return ids.astype(np.int64), self.table[ids]
