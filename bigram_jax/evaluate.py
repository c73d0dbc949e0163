"""Exact full-split losses from transition counts, the best-possible floors, and the lecture's estimate."""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax.counts import PairCounts
from bigram_jax.data import get_batch
from bigram_jax.model import BigramLanguageModel, table_of


def _pairs(counts: np.ndarray | PairCounts) -> PairCounts:
    """Counts in sparse form, whichever form they came in."""
    return counts if isinstance(counts, PairCounts) else PairCounts.from_dense(np.asarray(counts))


@jax.jit
def exact_loss(params: dict, counts: jax.Array) -> jax.Array:
    """Mean loss over every position of a split, exactly, in O(V^2): the lecture's loss with no sampling."""
    model = BigramLanguageModel(table_of(params).shape[0])
    return model.apply(params, counts, method=BigramLanguageModel.loss_from_counts)


SPARSE = ("rows", "cols", "n", "row_totals")  # sparse_exact_loss's arguments, as device_counts names them
DENSE_MAX_VOCAB = 2048  # above this the exact loss reads sparse counts: dense (V, V) would outgrow the pairs


@jax.jit
def sparse_exact_loss(table: jax.Array, rows: jax.Array, cols: jax.Array, n: jax.Array,
                      row_totals: jax.Array) -> jax.Array:
    """exact_loss from sparse counts: (sum_i N_i * logsumexp(table_i) - sum_ij C_ij * table_ij) / N."""
    lse = jax.nn.logsumexp(table, axis=-1)  # (V,): works on a row-sharded table, one row per device slice
    return (jnp.sum(row_totals * lse) - jnp.sum(n * table[rows, cols])) / jnp.sum(n)


def device_counts(counts: PairCounts, dtype, put) -> dict:
    """A split's counts on the device(s) via `put` (host array -> device array): dense for small V, else sparse."""
    if counts.vocab_size <= DENSE_MAX_VOCAB:
        return {"dense": put(counts.dense().astype(dtype))}
    return {"rows": put(counts.rows.astype(np.int32)), "cols": put(counts.cols.astype(np.int32)),
            "n": put(counts.n.astype(dtype)), "row_totals": put(counts.row_totals().astype(dtype))}


def exact(params: dict, counts: dict, run: Callable | None = None) -> float:
    """The exact mean loss of a split held as `device_counts`. `run(fn, *args, out=...)`: how the program is
    called (default: directly; the run layer passes the compiled-program cache's runner)."""
    fn, args = (exact_loss, (params, counts["dense"])) if "dense" in counts else \
        (sparse_exact_loss, (table_of(params), *(counts[k] for k in SPARSE)))
    return float(fn(*args) if run is None else run(fn, *args, out=0.0))


def _xent(counts: np.ndarray, probs: np.ndarray) -> float:
    """Mean -log p over the transitions in `counts` (0 * log 0 taken as 0)."""
    mask = counts > 0
    return float(-(counts[mask] * np.log(probs[mask])).sum() / counts.sum())


def smoothed_table(train_counts: np.ndarray, alpha: float) -> np.ndarray:
    """Add-alpha estimate of P(next | current) from train counts; (V, V) rows sum to 1."""
    c = train_counts + alpha
    return c / c.sum(axis=1, keepdims=True)


def floor_train(train_counts: np.ndarray | PairCounts) -> float:
    """The lowest train loss any bigram table can reach: the count-based maximum-likelihood table."""
    c = _pairs(train_counts)
    return max(0.0, float(-(c.n * np.log(c.n / c.row_totals()[c.rows])).sum() / c.n.sum()))  # 0, not -0, if certain


def _smoothed_xent(train: PairCounts, val: PairCounts) -> Callable[[float], float]:
    """alpha -> val loss of the add-alpha train table, in O(val pairs) per alpha."""
    pos = np.minimum(np.searchsorted(train.ids, val.ids), max(len(train.ids) - 1, 0))
    t = np.where(train.ids[pos] == val.ids, train.n[pos], 0.0) if len(train.ids) else np.zeros(len(val.ids))
    rows = train.row_totals()[val.rows]
    V, total = train.vocab_size, val.n.sum()
    return lambda alpha: float(-(val.n * np.log((t + alpha) / (rows + alpha * V))).sum() / total)


def _argmin_alpha(xent: Callable[[float], float]) -> float:
    """The alpha in [1e-6, 1e3] minimizing xent (golden-section search in log alpha).

    Ours, not scipy.optimize.minimize_scalar: importing scipy.optimize would slow every run's start.
    """
    f = lambda la: xent(float(np.exp(la)))  # noqa: E731
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


def floor_val(train_counts: np.ndarray | PairCounts, val_counts: np.ndarray | PairCounts) -> tuple[float, float]:
    """(val loss, alpha) of the best add-alpha-smoothed train table: the best a table estimated from train reaches."""
    xent = _smoothed_xent(_pairs(train_counts), _pairs(val_counts))  # built once: the search calls it ~60 times
    alpha = _argmin_alpha(xent)
    return max(0.0, xent(alpha)), alpha


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def estimate_loss(model: BigramLanguageModel, params: dict, key: jax.Array, data: jax.Array,
                  batch_size: int, block_size: int, eval_iters: int = 200) -> jax.Array:
    """The lecture's estimate_loss for one split: the mean loss of `eval_iters` random batches."""

    def one(k: jax.Array) -> jax.Array:
        x, y = get_batch(k, data, batch_size, block_size)
        return model.apply(params, x, y)[1]

    return jnp.mean(jax.vmap(one)(jax.random.split(key, eval_iters)))
