"""Loading a checkpoint's params for sampling, exporting and pictures (no optimizer, no train state)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from bigram_jax.checkpoint.manager import Checkpoints, checkpoint_dir
from bigram_jax.corpus.compact import tokenizer_of
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
    def tokenizer(self) -> Any:
        """The tokenizer the run was trained with (tokenizers.py), rebuilt from what the checkpoint records; for a
        compact table (--compact-vocab) its ids are the table's rows, mapped to and from the tokenizer's."""
        return tokenizer_of(self.meta.get("tokenizer"), self.vocab, self.meta["vocab_size"])


RETRIES = 5  # reads of the newest step while a running run saves new steps and deletes old ones


def _steps_on_disk(directory: Path) -> set[str]:
    try:
        return {p.name for p in directory.iterdir() if p.name.isdigit()}
    except OSError:
        return set()


def load_checkpoint(path: str | Path, step: int | None = None) -> Checkpoint:
    """Load params (not the optimizer) of checkpoint `step` (None = latest) from an out-dir or its checkpoints folder.

    A run that is still training saves new steps and deletes old ones: the newest step when it was listed may be
    half deleted when it is read. A read of the newest step that fails while the steps on disk change is tried
    again (a damaged step, with nothing changing around it, is an error: never skipped for an older one)."""
    directory = checkpoint_dir(path)
    if not directory.is_dir():
        raise UserError(f"checkpoint directory not found: {directory}")
    for attempt in range(RETRIES):
        before = _steps_on_disk(directory)
        try:
            with Checkpoints(directory, read_only=True) as ckpts:
                chosen = ckpts.pick(step)
                meta = ckpts.read_meta(chosen)
                params = ckpts.restore_params(chosen, meta["vocab_size"], meta)
            return Checkpoint(params=params, step=chosen, vocab=meta["vocab"], config=meta["config"], meta=meta)
        except UserError:
            if step is not None or attempt == RETRIES - 1 or _steps_on_disk(directory) == before:
                raise
            time.sleep(0.05 * (attempt + 1))  # a rotation under way: let it finish its deletes
    raise AssertionError("unreachable: the last attempt returns or raises")
