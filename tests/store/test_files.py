"""Checked input files (bigram_jax/store/files.py): special files refused by every command."""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import one_line, run_cli, run_script


@contextlib.contextmanager
def _unblocked(fifo: Path, after: float = 60) -> Iterator[None]:
    """Hang guard for an in-process command handed `fifo`: after `after` seconds (the call's quiet time is well
    under one) a writer opens and closes it, so a reader blocked on it sees its end and the test fails instead
    of hanging."""
    def release() -> None:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # nobody has it open for reading: nothing waits
            pass

    timer = threading.Timer(after, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.mark.e2e
def test_special_files_are_refused(tmp_path, run):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with _unblocked(fifo):
        for argv in (["--data", str(fifo)], ["--config", str(fifo)]):
            one_line(run_cli("train.py", *argv, "--out-dir", str(tmp_path / "o")), 2, "not a regular file")
    # in processes of their own, a time limit as the guard: /dev/zero would be read forever, not blocked on
    one_line(run_script("train.py", "--data", "/dev/zero", "--out-dir", str(tmp_path / "o"), timeout=120), 2,
             "not a regular file")
    one_line(run_script("sample.py", "--checkpoint", str(run), "--prompt-file", str(fifo), timeout=120), 2,
             "not a regular file")
