"""The lecture's BigramLanguageModel as a Flax linen module."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigram_jax.errors import UserError


class BigramLanguageModel(nn.Module):
    """Each token reads the logits for the next token off a row of a V x V lookup table."""

    vocab_size: int

    def setup(self) -> None:
        # torch's nn.Embedding initialises N(0, 1); flax's default is a scaled variance, so set it.
        self.token_embedding_table = nn.Embed(
            self.vocab_size, self.vocab_size, embedding_init=nn.initializers.normal(1.0))

    def __call__(self, idx: jax.Array, targets: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        """The lecture's forward: logits (B, T, C) and None, or logits (B*T, C) and the mean cross-entropy.

        Ids outside [0, V) would read NaN rows (or wrap, for -1): called eagerly, they are a UserError; under
        jit the values are not known and are not checked, so validate them before (data.check_ids)."""
        _check_concrete(self.vocab_size, idx, targets)
        logits = self.token_embedding_table(idx)  # (B, T, C)
        if targets is None:
            return logits, None
        B, T, C = logits.shape
        logits = logits.reshape(B * T, C)
        # the cross-entropy of the same rows, read off the table again: its gradient holds one (B*T, C) array
        loss = gathered_xent(self.table(), idx.reshape(B * T), targets.reshape(B * T))
        return logits, loss

    def table(self) -> jax.Array:
        """The whole (V, V) logit table: row i holds the logits of the token after token i."""
        return self.token_embedding_table.embedding

    def loss_from_counts(self, counts: jax.Array) -> jax.Array:
        """Mean cross-entropy of a batch given only its (V, V) transition counts: -sum(C * log_softmax) / N."""
        table = self.table()
        return counts_xent(table, counts.astype(table.dtype))


def _check_concrete(V: int, *arrays: jax.Array | None) -> None:
    """Raise UserError for an id outside [0, V) in any array whose values are known (not traced)."""
    for a in arrays:
        if a is None or isinstance(a, jax.core.Tracer) or not getattr(a, "size", 0):
            continue
        lo, hi = int(jnp.min(a)), int(jnp.max(a))
        if lo < 0 or hi >= V:
            raise UserError(f"token ids must be in [0, {V}), got {lo}..{hi}")


def table_of(params: dict) -> jax.Array:
    """The (V, V) logit table inside a BigramLanguageModel params pytree."""
    return params["params"]["token_embedding_table"]["embedding"]


def params_of(table: jax.Array) -> dict:
    """The BigramLanguageModel params pytree holding `table` (V, V): the inverse of `table_of`."""
    return {"params": {"token_embedding_table": {"embedding": table}}}


@jax.custom_vjp
def counts_xent(table: jax.Array, counts: jax.Array) -> jax.Array:
    """-sum(C * log_softmax(table)) / sum(C), with its gradient in closed form (fewer passes over V x V)."""
    return _counts_xent_fwd(table, counts)[0]


def _counts_xent_fwd(table: jax.Array, counts: jax.Array) -> tuple[jax.Array, tuple]:
    m = jnp.max(table, axis=-1, keepdims=True)  # (V, 1): for a stable logsumexp
    e = jnp.exp(table - m)  # (V, V)
    s = jnp.sum(e, axis=-1, keepdims=True)  # (V, 1)
    rows = jnp.sum(counts, axis=-1, keepdims=True)  # (V, 1): how often each token is the current one
    n = jnp.sum(rows)
    loss = jnp.sum(counts * (m + jnp.log(s) - table)) / n
    # the softmax is made again in the backward pass, not kept: one (V, V) array less at the step's peak
    return loss, (table, m, s, counts, rows, n)


def _counts_xent_bwd(res: tuple, g: jax.Array) -> tuple[jax.Array, None]:
    table, m, s, counts, rows, n = res
    probs = jnp.exp(table - m) / s  # (V, V): the forward's softmax, the same operations
    # d/d table of the mean cross-entropy: (softmax * row count - count) / N; counts are data, no gradient
    return g * (probs * rows - counts) / n, None


counts_xent.defvjp(_counts_xent_fwd, _counts_xent_bwd)


XENT_CHUNK = 2048  # positions per pass of the gathered loss: it holds (XENT_CHUNK, V) at a time, whatever B*T is


@jax.custom_vjp
def gathered_xent(table: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean -log softmax(table[x_i])[y_i] over positions i, what optax's softmax_cross_entropy_with_integer_labels
    gives on the gathered logits, computed a chunk of positions at a time. Autodiff of the whole gather would hold
    the (B*T, V) logits and a second such array for d/dlogits; a chunk at a time holds (XENT_CHUNK, V), so a step
    of B = 64, T = 256 at V = 11,706 holds 0.09 GiB of it instead of 1.4."""
    return _gathered_xent_fwd(table, x, y)[0]


def _chunked(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """(N,) arrays as (chunks, k) with k = min(N, XENT_CHUNK), the last chunk padded with copies of the last
    position (a real row and its own logsumexp: finite, where row 0 against a logsumexp of 0 could overflow to
    inf, and inf * 0 is NaN); the padding is dropped, or weighs 0."""
    N = arrays[0].shape[0]
    k = min(N, XENT_CHUNK)
    n = -(-N // k)
    return tuple(jnp.pad(a, (0, n * k - N), mode="edge").reshape(n, k) for a in arrays)


def _gathered_xent_fwd(table: jax.Array, x: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple]:
    def one(xy: tuple) -> tuple[jax.Array, jax.Array]:
        logits = table[xy[0]]  # (k, V)
        # the target's logit from the gathered rows: a 2-D gather table[x, y] would make XLA copy the table
        return jax.nn.logsumexp(logits, axis=-1), jnp.take_along_axis(logits, xy[1][:, None], axis=-1)[:, 0]

    N = x.shape[0]
    lse, picked = (a.reshape(-1)[:N] for a in jax.lax.map(one, _chunked(x, y)))  # (N,) each
    return jnp.mean(lse - picked), (table, x, y, lse)


def _gathered_xent_bwd(res: tuple, g: jax.Array) -> tuple[jax.Array, None, None]:
    table, x, y, lse = res
    N, V = x.shape[0], table.shape[1]
    xc, yc, lc = _chunked(x, y, lse)
    w = jnp.where(jnp.arange(xc.size) < N, g / N, 0).astype(table.dtype)  # d loss / d position; the padding: 0
    wc = w.reshape(xc.shape)

    def add(i: jax.Array, grad: jax.Array) -> jax.Array:  # (softmax - onehot) * w, into the rows the chunk read
        d = jnp.exp(table[xc[i]] - lc[i][:, None]) - jax.nn.one_hot(yc[i], V, dtype=table.dtype)
        return grad.at[xc[i]].add(d * wc[i][:, None])

    return jax.lax.fori_loop(0, xc.shape[0], add, jnp.zeros_like(table)), None, None


gathered_xent.defvjp(_gathered_xent_fwd, _gathered_xent_bwd)
