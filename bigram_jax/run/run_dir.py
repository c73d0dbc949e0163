"""A run's records and its clock: config.json, metrics.jsonl, summary.json, TensorBoard events.

Where runs live and their locks: store/run_folders.py; checkpoints (OUT_DIR/checkpoints): checkpoint/; stop
signals: run/signals.py. In a multi-process run only process 0 (`primary`) writes here.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bigram_jax.config import Config
from bigram_jax.store.files import read_checked

METRICS_MAX = 1 << 30  # bytes of metrics.jsonl read whole: ~5 million eval rows, far past any run's


def _step_of(row: str) -> float:
    """The step of a metrics.jsonl row; infinity for a row a killed run left half-written (it is dropped)."""
    try:
        return int(json.loads(row)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


class RunDir:
    """The records of one run in its out-dir: config.json, metrics.jsonl, summary.json and TensorBoard events;
    a context manager that closes the TensorBoard writer when the run ends."""

    def __init__(self, cfg: Config, start_step: int, primary: bool = True, tensorboard: bool = False,
                 t_start: float | None = None):
        """`t_start`: the run's perf_counter start (default now)."""
        self.out_dir, self.primary = Path(cfg.out_dir), primary
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.tb = None
        if not primary:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._trim_metrics(start_step)
        (self.out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if tensorboard:
            from bigram_jax.run.tblog import TensorBoardLogger

            self.tb = TensorBoardLogger(self.out_dir / "tensorboard", start_step=start_step)

    def _trim_metrics(self, step: int) -> None:
        """Drop metric rows past `step`: an interrupted run may have logged beyond its last checkpoint."""
        path = self.out_dir / "metrics.jsonl"
        if step == 0:
            path.write_text("")
        elif path.exists():
            text = read_checked(path, "metrics file", METRICS_MAX).decode("utf-8", errors="replace")  # no FIFO
            rows = [r for r in text.splitlines() if _step_of(r) <= step]
            path.write_text("".join(r + "\n" for r in rows))

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t_start

    def log_eval(self, step: int, train_loss: float, val_loss: float, batch_loss: float | None, lr: float,
                 tokens_per_second: float | None = None) -> None:
        """Print the lecture's line and append a row to metrics.jsonl (and TensorBoard, if on); process 0 only."""
        if not self.primary:
            return
        print(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}", flush=True)
        row = {"step": step, "train_loss": train_loss, "val_loss": val_loss, "batch_loss": batch_loss,
               "lr": lr, "tokens_per_second": tokens_per_second, "elapsed_seconds": round(self.elapsed(), 4)}
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            self.tb.log_eval(step, row)

    def write_summary(self, summary: dict) -> None:
        """summary.json: the run's final figures (process 0)."""
        if self.primary:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.tb is not None:
            self.tb.close()
        sys.stdout.flush()
