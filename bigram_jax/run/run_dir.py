"""A run's folder and its clock: config.json, metrics.jsonl, summary.json, TensorBoard events, stop signals.

Checkpoints live in OUT_DIR/checkpoints and belong to checkpoint.py. In a multi-process run only process 0
(`primary`) writes here; every process watches for signals.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from bigram_jax.store import locks
from bigram_jax.config import Config
from bigram_jax.errors import UserError


from bigram_jax.run.signals import detach_hung_up_terminal, set_stop_handlers
RUNS = Path("runs/bigram")  # where runs go without --out-dir: version_0, version_1, ... (as Lightning numbers them)
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard")
LOCK = ".lock"


def holds_run(out_dir: Path) -> list[str]:
    """The files of a run that `out_dir` already holds."""
    return [name for name in RUN_FILES if (out_dir / name).exists()]


def claim(out_dir: Path, fresh: bool) -> IO:
    """Make `out_dir` this run's: refuse a fresh run into a folder that holds a run, then lock it for the run's
    life (a second run into it is refused while this one lives). Returns the lock: close it when the run ends
    (a killed run's lock goes with its process)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir} is a file, not a folder")
    found = holds_run(out_dir) if fresh else []
    if found:
        held = f"{out_dir} already holds a run ({', '.join(found)})"
        raise UserError(f"{held}: continue it with train_and_evaluate(cfg, resume=open_resume({{'out_dir': ...}})), "
                        "or give another out_dir (nothing was changed)",
                        cli=f"{held}: pass --resume to continue it, or choose another --out-dir (nothing was changed)")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = locks.acquire(out_dir / LOCK, wait=False)  # (the file stays empty)
    except OSError as e:
        raise UserError(f"cannot lock the run folder: {out_dir / LOCK} is not a plain file ({e.strerror}); "
                        "move it aside") from None
    if lock is None:
        raise UserError(f"{out_dir} is in use by another run: wait for it to end, or give another out_dir",
                        cli=f"{out_dir} is in use by another run: wait for it to end, or choose another --out-dir")
    return lock


def next_run(base: Path) -> Path:
    """A new numbered run folder under `base` (version_0, version_1, ...), created at once so that two runs
    started together never pick the same one."""
    n = 1 + max((v for v in map(_version, base.glob("version_*")) if v is not None), default=-1)
    while True:
        path = base / f"version_{n}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1


def latest_run(base: Path) -> Path:
    """The newest numbered run under `base` (or `base` itself, a run of a version that did not number them)."""
    runs = sorted((v, p) for p in base.glob("version_*") if (v := _version(p)) is not None)
    if runs:
        return runs[-1][1]
    if holds_run(base):
        return base
    raise UserError(f"no run found in {base}: train one first (python scripts/train.py), or name it")


def _version(p: Path) -> int | None:
    """N of a folder named version_N."""
    tail = p.name.removeprefix("version_")
    return int(tail) if p.is_dir() and tail.isdigit() else None


def _step_of(row: str) -> float:
    """The step of a metrics.jsonl row; infinity for a row a killed run left half-written (it is dropped)."""
    try:
        return int(json.loads(row)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


class RunDir:
    """The out-dir of one run; a context manager that catches the stop signals (errors.STOP_SIGNALS) as a request
    to stop, and puts the handlers it found back when the run ends."""

    def __init__(self, cfg: Config, start_step: int, primary: bool = True, tensorboard: bool = False,
                 t_start: float | None = None):
        """`t_start`: the run's perf_counter start (default now)."""
        self.out_dir, self.primary = Path(cfg.out_dir), primary
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.stop_signal = 0  # set by a signal handler; the loop stops after its chunk
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
            rows = [r for r in path.read_text(errors="replace").splitlines() if _step_of(r) <= step]
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

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Ask the loop to stop after its current chunk (after a hang-up, with the dead terminal's output muted)."""
        if signum == signal.SIGHUP:
            detach_hung_up_terminal()
        self.stop_signal = signum

    def __enter__(self) -> RunDir:
        # handlers can be set from the main thread only
        main = threading.current_thread() is threading.main_thread()
        self._old = set_stop_handlers(self._on_signal) if main else {}
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.tb is not None:
                self.tb.close()
        finally:
            for s, h in self._old.items():
                signal.signal(s, h)
            sys.stdout.flush()
