"""TensorBoard event files for a run, written through tensorboardX; metrics.jsonl stays the source of truth."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bigram_jax.errors import UserError

MISSING = "--tensorboard needs tensorboardX: pip install 'bigram-jax[tensorboard]'"
# metrics.jsonl key -> TensorBoard tag; the "loss/" prefix puts the three losses in one TensorBoard section
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "batch_loss": "loss/batch",
        "lr": "opt/lr", "tokens_per_second": "perf/tokens_per_second"}


def check_available() -> None:
    """Raise UserError if tensorboardX is missing; call before a long run."""
    _writer_class()


def _writer_class() -> Any:
    """tensorboardX's SummaryWriter, imported lazily (an optional extra)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise UserError(MISSING) from None
    return SummaryWriter


class TensorBoardLogger:
    """Scalars of each eval row as TensorBoard events in `log_dir`; use as a context manager or call close()."""

    def __init__(self, log_dir: str | Path, start_step: int = 0):
        """`start_step`: the step the run starts (or resumes) from."""
        writer = _writer_class()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # TensorBoard hides older events from steps >= purge_step, as Session trims metrics.jsonl: a fresh run
        # hides every earlier event in log_dir, a resumed one those logged after its checkpoint
        purge = start_step + 1 if start_step else 0
        self._w = writer(logdir=str(self.log_dir), purge_step=purge)

    def log_eval(self, step: int, row: dict[str, Any]) -> None:
        """Write the row's known scalars (None values, e.g. step 0's batch loss, are skipped) and flush."""
        for key, tag in TAGS.items():
            value = row.get(key)
            if value is not None:
                self._w.add_scalar(tag, float(value), int(step))
        self._w.flush()  # evals are rare: flushing each one lets a live TensorBoard see it at once

    def close(self) -> None:
        """Flush and close the event file."""
        self._w.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
