"""The training loop's pace: how long each chunk of fused steps is, when it stops to evaluate and to save, and the
running figures it logs at an eval (the batch loss summed in step order, tokens per second)."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from bigram_jax.config import Config
from bigram_jax.train import LOSS_STEPS

CHECKPOINT_SECONDS = 60.0  # checkpoint_every = 0: at an eval once this long has passed since the last save


@dataclasses.dataclass
class Clock:
    """The loop's running figures between evals, and where its time went."""

    start: int  # the step this run started from
    loss_sum: float = 0.0  # batch losses since the last eval, summed in step order in float64
    since: int = 0  # steps since the last eval
    window_s: float = 0.0  # training seconds since the last eval
    seconds: dict = dataclasses.field(default_factory=lambda: {"train": 0.0, "eval": 0.0, "checkpoints": 0.0})
    last_save: float = dataclasses.field(default_factory=time.monotonic)

    def add(self, batch_losses: np.ndarray, dt: float) -> None:
        """A chunk's batch losses (one per step) and its seconds. The losses are added one at a time in step order:
        the log is the same however a run was cut into chunks (their lengths follow the wall clock)."""
        self.loss_sum = float(np.cumsum(np.concatenate(([self.loss_sum], batch_losses.astype(np.float64))))[-1])
        self.since, self.window_s = self.since + len(batch_losses), self.window_s + dt
        self.seconds["train"] += dt

    def take(self, tokens_per_step: int) -> tuple[float, float]:
        """(mean batch loss, tokens per second) since the last eval; starts the next window."""
        out = self.loss_sum / self.since, self.since * tokens_per_step / max(self.window_s, 1e-9)
        self.loss_sum, self.since, self.window_s = 0.0, 0, 0.0
        return out


def chunk_after(n: int, dt: float, cfg: Config) -> int:
    """The next chunk's length: about cfg.chunk_seconds at this chunk's speed, at most LOSS_STEPS."""
    return max(1, min(LOSS_STEPS, int(n * cfg.chunk_seconds / max(dt, 1e-6))))


def chunk_end(step: int, cfg: Config) -> int:
    """Where a chunk from `step` must end at the latest: the next eval, checkpoint or last step."""
    ends = [cfg.eval_interval, cfg.max_iters] + ([cfg.checkpoint_every] if cfg.checkpoint_every else [])
    return min((step // every + 1) * every for every in ends)  # (for max_iters: itself, once it is ahead)


def checkpoint_due(cfg: Config, step: int, at_eval: bool, last_save: float) -> bool:
    """Save now? At the last step always; every checkpoint_every steps; or, for 0, at an eval once
    CHECKPOINT_SECONDS have passed since the last save (a short run saves once, a long one once a minute)."""
    if step == cfg.max_iters:
        return True
    if cfg.checkpoint_every:
        return step % cfg.checkpoint_every == 0
    return at_eval and time.monotonic() - last_save >= CHECKPOINT_SECONDS
