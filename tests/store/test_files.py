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


def test_the_checked_open(tmp_path):
    """open_checked / read_checked: the one open of every small input. A FIFO is refused at once, never waited on
    (it is opened without blocking, then checked on the open file); a folder, a missing file and one over its
    limit are one line each; a regular file reads whole."""
    from bigram_jax.errors import UserError
    from bigram_jax.store.files import open_checked, read_checked

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "f.json").write_bytes(b"x" * 100)
    with _unblocked(fifo):
        for path, words in ((fifo, "not a regular file"), (tmp_path, "not a regular file"),
                            (tmp_path / "none.json", "config file not found"),
                            (tmp_path / "f.json", "is 100 bytes, over the 99 bytes")):
            with pytest.raises(UserError, match=words):
                read_checked(path, "config file", 99)
    assert read_checked(tmp_path / "f.json", "config file", 100) == b"x" * 100
    with open_checked(tmp_path / "f.json", "state_dict file") as f:  # no limit: a handle, blocking as any
        assert f.read() == b"x" * 100 and os.get_blocking(f.fileno())


@pytest.mark.torch  # import_torch.py
def test_a_state_dict_fifo_and_a_meta_pkl_fifo_are_refused(tmp_path):
    """import_torch.py --state-dict and --tokenizer meta.pkl on a FIFO: one line at once (through the checked
    open)."""
    fifo = tmp_path / "x.pkl"
    os.mkfifo(fifo)
    with _unblocked(fifo):
        one_line(run_cli("import_torch.py", "--state-dict", str(fifo), "--out-dir", str(tmp_path / "o")), 2,
                 "not a regular file")
        one_line(run_cli("train.py", "--tokenizer", str(fifo), "--out-dir", str(tmp_path / "o")), 2,
                 "not a regular file")
