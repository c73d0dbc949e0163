"""Sampling: the lecture's generate, O(1) per new token, in one compiled scan with fixed shapes."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax.compile import programs
from bigram_jax.errors import UserError
from bigram_jax.data import check_ids
from bigram_jax.model import table_of
from bigram_jax.devices.parallel import to_host

SAMPLERS = ("categorical", "cdf")
# draws of at most this many (token, row entry) pairs are compiled for compile speed (programs.CPU_PROFILES):
# the lecture's 500 tokens compile 0.17 s sooner; wider draws (64 x 2000 tokens) could run half again as long
QUICK_WORK = 1 << 22


def _number(x: Any, integer: bool) -> float | int | None:
    """A Python, numpy or JAX scalar as a Python number (None if it is not one, or not an integer if asked)."""
    if isinstance(x, bool) or np.ndim(x) != 0:
        return None
    a = np.asarray(x)
    if a.dtype.kind not in ("iu" if integer else "iuf"):
        return None
    return int(a) if integer else float(a)


def _check(table: jax.Array, max_new_tokens: Any, temperature: Any, top_k: Any, sampler: str
           ) -> tuple[int, float, int | None]:
    """(max_new_tokens, temperature, top_k) as Python numbers, or a UserError for what would sample garbage."""
    V, n, t = table.shape[0], _number(max_new_tokens, True), _number(temperature, False)
    k = None if top_k is None else _number(top_k, True)
    if table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise UserError(f"the table must be square (V, V), got shape {table.shape}")
    if n is None or n < 0:
        raise UserError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if t is None or not (math.isfinite(t) and t > 0):
        raise UserError(f"temperature must be a positive finite number, got {temperature!r}")
    if top_k is not None and (k is None or not 1 <= k <= V):
        raise UserError(f"top_k must be an integer in 1..{V} (the vocabulary size), got {top_k!r}")
    if sampler not in SAMPLERS:
        raise UserError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    return n, t, k


def generate(params: dict, key: jax.Array, idx, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, sampler: str = "categorical") -> jax.Array:
    """Extend each row of `idx` (B, T) by `max_new_tokens` sampled tokens; returns (B, T + max_new_tokens).

    Like the lecture's `generate`, each new token is drawn from softmax(logits / temperature) of the row
    of the last token; `top_k` keeps only the k largest logits of that row. `sampler='categorical'` draws
    each token with `jax.random.categorical`; `sampler='cdf'` draws the same distribution by inverse-CDF
    lookup in a precomputed cumulative table, with all uniforms drawn at once (much faster on CPU).
    Same key, same output.
    """
    table = table_of(params)
    n, t, top_k = _check(table, max_new_tokens, temperature, top_k, sampler)
    idx = check_ids(idx, table.shape[0])
    if idx.ndim != 2 or idx.shape[1] < 1:
        raise UserError(f"idx must have shape (B, T) with T >= 1, got {idx.shape}")
    if n == 0:
        return jax.device_put(idx)  # a transfer: jnp.asarray of a host array compiles a program (lax.stage)
    # a temperature below float32's smallest normal (even 1e-45) samples as that one: both are the greedy limit
    t = np.asarray(max(t, float(jnp.finfo(table.dtype).tiny)), table.dtype)
    # host inputs (numpy), host output: also right when the table is spread over several processes
    quick = n * idx.shape[0] * table.shape[0] <= QUICK_WORK  # a short draw: its compile is most of its time
    new, finite = programs.run(_sample, table, key, idx[:, -1], t, out=(0, 0), profile="once" if quick else None,
                               max_new_tokens=n, top_k=top_k, sampler=sampler)  # (B, N), ()
    if not bool(finite):  # checked in the same program: a separate check would be two more compiles
        raise UserError("the table holds NaN or infinite values: nothing to sample from")
    return jax.device_put(np.concatenate([idx, to_host(new)], axis=1))


def _row_logits(table: jax.Array, temperature: jax.Array, top_k: int | None) -> tuple[jax.Array, jax.Array | None]:
    """Per-row logits to sample from: (V, K) values and, with top-k, the (V, K) token ids they stand for.

    A row that a tiny temperature scales past float32's range is scaled after subtracting its maximum: its
    largest logit stays 0, the rest go to -inf at worst, so softmax and categorical see no inf - inf (NaN).
    Rows that stay finite are exactly table / temperature, as ever."""
    scaled = table / temperature  # (V, V)
    shifted = (table - table.max(axis=-1, keepdims=True)) / temperature
    logits = jnp.where(jnp.isfinite(scaled).all(axis=-1, keepdims=True), scaled, shifted)
    if top_k is None or top_k == table.shape[0]:
        return logits, None
    return jax.lax.top_k(logits, top_k)  # exactly k per row, ties broken by lower id


def _categorical_step(table: jax.Array, temperature: jax.Array, top_k: int | None, rows_drawn: int) -> Callable:
    """The categorical sampler's step, (prev (B,), key) -> (next, next). A draw that reads fewer rows than the table
    holds computes the logits of each row it reads as it goes: a 500-token sample of a 50,304-token table would
    otherwise hold several (V, V) arrays at once (23 GB, beside the train state). A draw that reads more computes
    every row's once, before. The same numbers either way: a row's logits depend on that row alone."""
    if rows_drawn < table.shape[0]:
        logits = lambda prev: _row_logits(table[prev], temperature, top_k)  # noqa: E731  ((B, K), (B, K) | None)
    else:
        vals, ids = _row_logits(table, temperature, top_k)  # (V, K), (V, K) | None
        logits = lambda prev: (vals[prev], None if ids is None else ids[prev])  # noqa: E731

    def step(prev: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        v, i = logits(prev)
        j = jax.random.categorical(k, v, axis=-1)  # (B,)
        nxt = j if i is None else jnp.take_along_axis(i, j[:, None], axis=-1)[:, 0]
        return nxt, nxt

    return step


@functools.partial(jax.jit, static_argnames=("max_new_tokens", "top_k", "sampler"))
def _sample(table: jax.Array, key: jax.Array, last: jax.Array, temperature: jax.Array,
            max_new_tokens: int, top_k: int | None, sampler: str) -> tuple[jax.Array, jax.Array]:
    """Draw (B, max_new_tokens) tokens, each from the row of the token before it; and whether the table is
    finite (when it is not, the tokens mean nothing)."""
    keys = jax.random.split(key, max_new_tokens)
    if sampler == "cdf":
        vals, ids = _row_logits(table, temperature, top_k)  # (V, K), (V, K) | None
        cdf = jnp.cumsum(jax.nn.softmax(vals, axis=-1), axis=-1)  # (V, K)
        u = jax.vmap(lambda k: jax.random.uniform(k, last.shape, cdf.dtype))(keys)  # (N, B): drawn at once

        def step(prev, u_t):
            rows = cdf[prev]  # (B, K)
            # u scaled by the row's own total (1 up to rounding): P(j) = cdf[j] - cdf[j-1] exactly
            v = u_t * rows[:, -1]
            if last.shape[0] <= 64:  # few rows: one compare-and-count beats a binary search's dependent steps
                j = jnp.sum(rows <= v[:, None], axis=-1)  # (B,): the same index as searchsorted(side='right')
            else:
                j = jax.vmap(lambda r, x: jnp.searchsorted(r, x, side="right"))(rows, v)  # (B,)
            j = jnp.minimum(j, cdf.shape[1] - 1)
            nxt = j if ids is None else ids[prev, j]
            return nxt, nxt
    else:
        step, u = _categorical_step(table, temperature, top_k, max_new_tokens * last.shape[0]), keys

    _, out = jax.lax.scan(step, last, u)  # (N, B)
    return out.T.astype(jnp.int32), jnp.isfinite(table).all()
