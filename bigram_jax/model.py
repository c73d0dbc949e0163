"""The lecture's BigramLanguageModel as a Flax linen module."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

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
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets.reshape(B * T)).mean()
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
    return loss, (e / s, counts, rows, n)


def _counts_xent_bwd(res: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    probs, counts, rows, n = res
    # d/d table of the mean cross-entropy: (softmax * row count - count) / N; counts are data, no gradient
    return g * (probs * rows - counts) / n, jnp.zeros_like(counts)


counts_xent.defvjp(_counts_xent_fwd, _counts_xent_bwd)
