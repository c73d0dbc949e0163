"""A run's records (bigram_jax/run/run_dir.py): metrics.jsonl trimmed on resume, read through the checked open."""
from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bigram_jax.config import make_config
from bigram_jax.errors import UserError
from bigram_jax.run.run_dir import METRICS_MAX, RunDir


@contextlib.contextmanager
def _released(fifo: Path, after: float = 60) -> Iterator[None]:
    """Hang guard for a call handed `fifo` that may read it and then write it back (the old trim did both):
    after `after` seconds (the call's quiet time is well under one), and each second after until the call ends,
    a writer and a reader open and close it without blocking, so an open blocked either way, or a read, goes on
    and the test fails instead of hanging."""
    done = threading.Event()

    def release() -> None:
        wait = after
        while not done.wait(wait):
            wait = 1
            for flags in (os.O_WRONLY, os.O_RDONLY):
                try:
                    os.close(os.open(fifo, flags | os.O_NONBLOCK))
                except OSError:  # (a writer with no reader: nobody waits to read)
                    pass

    guard = threading.Thread(target=release, daemon=True)
    guard.start()
    try:
        yield
    finally:
        done.set()
        guard.join()


def _resumed(out: Path, step: int) -> None:
    RunDir(make_config({"out_dir": str(out)}), start_step=step)


def test_resume_trims_metrics_past_its_step(tmp_path):
    """Rows past the resumed step go, and a half-written last row (a killed run's) with them."""
    rows = [json.dumps({"step": s, "train_loss": 1.0}) for s in (0, 100, 200)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + '\n{"step": 3')
    _resumed(tmp_path, 100)
    assert (tmp_path / "metrics.jsonl").read_text() == rows[0] + "\n" + rows[1] + "\n"


def test_a_metrics_fifo_is_refused_at_once_on_resume(tmp_path):
    """metrics.jsonl is read through the checked open: a FIFO there is one line, at once; the old read by name
    blocked on it (and its write back after, on a second open)."""
    os.mkfifo(tmp_path / "metrics.jsonl")
    with _released(tmp_path / "metrics.jsonl"), pytest.raises(UserError, match="metrics file .* is not a regular"):
        _resumed(tmp_path, 100)


def test_an_oversized_metrics_file_is_refused_unread_on_resume(tmp_path):
    """A metrics.jsonl over METRICS_MAX (sparse: no disk) is refused by its size, before a byte is read; it used
    to be read whole (and then written back)."""
    with open(tmp_path / "metrics.jsonl", "wb") as f:
        f.truncate(METRICS_MAX + 1)
    with pytest.raises(UserError, match="metrics file .* over the 1024 MB such a file can be"):
        _resumed(tmp_path, 100)
    assert os.path.getsize(tmp_path / "metrics.jsonl") == METRICS_MAX + 1  # left as it was
