"""The lecture's BigramLanguageModel as a Flax linen module."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class BigramLanguageModel(nn.Module):
    """Each token reads the logits for the next token off a row of a V x V lookup table."""

    vocab_size: int

    def setup(self) -> None:
        # torch's nn.Embedding initialises N(0, 1); flax's default is a scaled variance, so set it.
        self.token_embedding_table = nn.Embed(
            self.vocab_size, self.vocab_size, embedding_init=nn.initializers.normal(1.0))

    def __call__(self, idx: jax.Array, targets: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        """The lecture's forward: logits (B, T, C) and None, or logits (B*T, C) and the mean cross-entropy."""
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
        counts = counts.astype(table.dtype)
        logp = jax.nn.log_softmax(table, axis=-1)  # (V, V)
        return -jnp.sum(counts * logp) / jnp.sum(counts)
