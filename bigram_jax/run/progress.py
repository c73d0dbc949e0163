"""The progress bar of a training run: rich's, on a terminal only, with rate and time left.

While it shows, rich prints the eval lines (stdout) above the bar (stderr), so the two never tangle.
"""
from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A context manager: `update(step, tokens_per_second)` after each chunk; a no-op off a terminal."""

    def __init__(self, total: int, start: int, enabled: bool = True):
        self._bar = None
        if not (enabled and sys.stderr.isatty() and total > start):
            return
        from rich import (
            progress as rp,  # imported only for a terminal: logs and pipes never pay for it
        )
        from rich.console import Console

        self._bar = rp.Progress(
            rp.BarColumn(), rp.MofNCompleteColumn(), rp.TextColumn("steps  {task.fields[rate]}"),
            rp.TimeElapsedColumn(), rp.TextColumn("eta"), rp.TimeRemainingColumn(),
            console=Console(stderr=True), transient=False, redirect_stdout=True)
        self._task = self._bar.add_task("train", total=total, completed=start, rate="")

    def update(self, step: int, tokens_per_second: float) -> None:
        """Move the bar to `step` and show the training rate so far."""
        if self._bar is not None:
            self._bar.update(self._task, completed=step, rate=f"{tokens_per_second / 1e6:.2f}M tok/s")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
