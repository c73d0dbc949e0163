"""Loading a checkpoint's params for sampling, exporting and pictures (no optimizer, no train state)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bigram_jax.checkpoint.manager import Checkpoints, checkpoint_dir
from bigram_jax.data import CharTokenizer, TokenIds, tokenizer_for
from bigram_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What a sampler needs from a checkpoint: params, step, vocabulary and the config that built it."""

    params: Any
    step: int
    vocab: str | None  # the characters of a text run; None for token ids
    config: dict
    meta: dict

    @property
    def tokenizer(self) -> CharTokenizer | TokenIds:
        """The tokenizer the run was trained with."""
        return tokenizer_for(self.vocab, self.meta["vocab_size"])


RETRIES = 5  # times the newest step is looked for again when a running run deletes it while it is read


def load_checkpoint(path: str | Path, step: int | None = None) -> Checkpoint:
    """Load params (not the optimizer) of checkpoint `step` (None = latest) from an out-dir or its checkpoints folder.

    A run that is still training deletes old steps as it saves new ones: the latest step may vanish between the
    listing and the read. Then the newest step is looked for again (a damaged step is an error, never skipped)."""
    directory = checkpoint_dir(path)
    if not directory.is_dir():
        raise UserError(f"checkpoint directory not found: {directory}")
    with Checkpoints(directory, read_only=True) as ckpts:
        for attempt in range(RETRIES):
            chosen = ckpts.pick(step)
            try:
                meta = ckpts.read_meta(chosen)
                params = ckpts.restore_params(chosen, meta["vocab_size"], meta)
                break
            except UserError:
                if step is not None or (directory / str(chosen)).exists() or attempt == RETRIES - 1:
                    raise
                ckpts.mgr.reload()  # rotated away while it was read: the newest step now
    return Checkpoint(params=params, step=chosen, vocab=meta["vocab"], config=meta["config"], meta=meta)
