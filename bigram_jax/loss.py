"""The two equal ways to get a batch's loss: the textbook gather, and the bigram's sufficient statistics.

A batch is a dict: {'x', 'y'} (B, T) token windows, or {'counts'} (V, V), the transition counts of such a
batch (the fused train loop counts K steps' batches at once and hands each step its own).
"""
from __future__ import annotations

from typing import Callable

import jax

from bigram_jax.counts import batch_counts
from bigram_jax.model import BigramLanguageModel

Batch = dict[str, jax.Array]
LossFn = Callable[[dict, Batch], jax.Array]


def gather_loss(model: BigramLanguageModel) -> LossFn:
    """(a) The lecture's loss: logits for every position, then cross-entropy. O(B*T*V)."""

    def loss_fn(params: dict, batch: Batch) -> jax.Array:
        _, loss = model.apply(params, batch["x"], batch["y"])
        return loss

    return loss_fn


def counts_loss(model: BigramLanguageModel) -> LossFn:
    """(b) The same loss from the batch's V x V transition counts. O(B*T) integer work + O(V^2) float."""

    def loss_fn(params: dict, batch: Batch) -> jax.Array:
        counts = batch.get("counts")
        if counts is None:  # counts carry no gradient: built from the ids, outside the table
            counts = batch_counts(batch["x"], batch["y"], model.vocab_size)
        return model.apply(params, counts, method=BigramLanguageModel.loss_from_counts)

    return loss_fn


LOSSES = {"gather": gather_loss, "counts": counts_loss}


def make_loss(model: BigramLanguageModel, name: str) -> LossFn:
    """The loss implementation called `name` ('gather' or 'counts'; Config.for_vocab decides 'auto')."""
    return LOSSES[name](model)
