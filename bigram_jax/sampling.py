"""Sampling: the lecture's generate, O(1) per new token, in one compiled scan with fixed shapes.

`generate` draws with `jax.random.categorical`, as the lecture does; `sample_cdf` draws the same distribution by
inverse-CDF lookup; the checks that keep garbage out of both come last.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax.data import check_ids
from bigram_jax.devices.parallel import to_host
from bigram_jax.errors import UserError
from bigram_jax.model import table_of

SAMPLERS = ("categorical", "cdf")


def generate(params: dict, key: jax.Array, idx, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, sampler: str = "categorical", run: Callable | None = None) -> jax.Array:
    """The lecture's generate: extend each row of `idx` (B, T) by `max_new_tokens` tokens, each drawn from
    softmax(logits / temperature) of the row of the token before it; returns (B, T + max_new_tokens).

    `top_k` keeps only the k largest logits of that row. `sampler='categorical'` draws each token with
    `jax.random.categorical`; 'cdf' draws the same distribution by inverse-CDF lookup (faster on CPU). Same key,
    same output. `run(fn, *args, out=..., **static)`: how the sampling program is called (default: directly;
    the run layer passes the compiled-program cache's runner)."""
    table = table_of(params)
    n, t, top_k, idx = _check(table, idx, max_new_tokens, temperature, top_k, sampler)
    if n == 0:
        return jax.device_put(idx)  # a transfer: jnp.asarray of a host array compiles a program (lax.stage)
    fn = sample_categorical if sampler == "categorical" else sample_cdf
    args = (table, key, idx[:, -1], t)  # host inputs: also right when the table is spread over several processes
    if run is None:
        new, finite = fn(*args, max_new_tokens=n, top_k=top_k)  # (B, N), ()
    else:
        new, finite = run(fn, *args, out=(0, 0), max_new_tokens=n, top_k=top_k)
    if not bool(finite):  # checked in the same program: a separate check would be two more compiles
        raise UserError("the table holds NaN or infinite values: nothing to sample from")
    return jax.device_put(np.concatenate([idx, to_host(new)], axis=1))


@functools.partial(jax.jit, static_argnames=("max_new_tokens", "top_k"))
def sample_categorical(table: jax.Array, key: jax.Array, last: jax.Array, temperature: jax.Array,
                       max_new_tokens: int, top_k: int | None) -> tuple[jax.Array, jax.Array]:
    """(B, max_new_tokens) tokens after `last` (B,), each drawn with jax.random.categorical from the logits of
    the row of the token before it; and whether the table is finite (if not, the tokens mean nothing)."""
    logits_of = _logits_by_row(table, temperature, top_k, max_new_tokens * last.shape[0])

    def step(prev: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits, ids = logits_of(prev)  # (B, K), (B, K) | None
        j = jax.random.categorical(k, logits, axis=-1)  # (B,)
        nxt = j if ids is None else jnp.take_along_axis(ids, j[:, None], axis=-1)[:, 0]
        return nxt, nxt

    _, out = jax.lax.scan(step, last, jax.random.split(key, max_new_tokens))  # (N, B)
    return out.T.astype(jnp.int32), jnp.isfinite(table).all()


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


def _logits_by_row(table: jax.Array, temperature: jax.Array, top_k: int | None, rows_drawn: int) -> Callable:
    """prev (B,) -> the logits to sample the next tokens from, and their ids with top-k. A draw that reads fewer
    rows than the table holds computes each row's logits as it goes (a 500-token sample of a 50,304-token table
    would otherwise hold several (V, V) arrays at once); a longer one computes every row's once, before. The same
    numbers either way: a row's logits depend on that row alone."""
    if rows_drawn < table.shape[0]:
        return lambda prev: _row_logits(table[prev], temperature, top_k)  # ((B, K), (B, K) | None)
    vals, ids = _row_logits(table, temperature, top_k)  # (V, K), (V, K) | None
    return lambda prev: (vals[prev], None if ids is None else ids[prev])


@functools.partial(jax.jit, static_argnames=("max_new_tokens", "top_k"))
def sample_cdf(table: jax.Array, key: jax.Array, last: jax.Array, temperature: jax.Array,
               max_new_tokens: int, top_k: int | None) -> tuple[jax.Array, jax.Array]:
    """sample_categorical's distribution by inverse-CDF lookup in each row's cumulative table, with every uniform
    drawn at once: no per-token Gumbel draw over the whole row (much faster on CPU)."""
    keys = jax.random.split(key, max_new_tokens)
    vals, ids = _row_logits(table, temperature, top_k)  # (V, K), (V, K) | None
    cdf = jnp.cumsum(jax.nn.softmax(vals, axis=-1), axis=-1)  # (V, K)
    u = jax.vmap(lambda k: jax.random.uniform(k, last.shape, cdf.dtype))(keys)  # (N, B): drawn at once

    def step(prev, u_t):
        rows = cdf[prev]  # (B, K)
        v = u_t * rows[:, -1]  # u scaled by the row's own total (1 up to rounding): P(j) = cdf[j] - cdf[j-1]
        if last.shape[0] <= 64:  # few rows: one compare-and-count beats a binary search's dependent steps
            j = jnp.sum(rows <= v[:, None], axis=-1)  # (B,): the same index as searchsorted(side='right')
        else:
            j = jax.vmap(lambda r, x: jnp.searchsorted(r, x, side="right"))(rows, v)  # (B,)
        j = jnp.minimum(j, cdf.shape[1] - 1)
        nxt = j if ids is None else ids[prev, j]
        return nxt, nxt

    _, out = jax.lax.scan(step, last, u)  # (N, B)
    return out.T.astype(jnp.int32), jnp.isfinite(table).all()


def _check(table: jax.Array, idx: Any, max_new_tokens: Any, temperature: Any, top_k: Any, sampler: str
           ) -> tuple[int, np.ndarray, int | None, np.ndarray]:
    """(max_new_tokens, temperature as the table's dtype, top_k, idx as int32 on the host), or a UserError for
    what would sample garbage."""
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
    idx = check_ids(idx, V)
    if idx.ndim != 2 or idx.shape[1] < 1:
        raise UserError(f"idx must have shape (B, T) with T >= 1, got {idx.shape}")
    # a temperature below float32's smallest normal (even 1e-45) samples as that one: both are the greedy limit
    return n, np.asarray(max(t, float(jnp.finfo(table.dtype).tiny)), table.dtype), k, idx


def _number(x: Any, integer: bool) -> float | int | None:
    """A Python, numpy or JAX scalar as a Python number (None if it is not one, or not an integer if asked)."""
    if isinstance(x, bool) or np.ndim(x) != 0:
        return None
    a = np.asarray(x)
    if a.dtype.kind not in ("iu" if integer else "iuf"):
        return None
    return int(a) if integer else float(a)
