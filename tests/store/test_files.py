"""Checked input files (bigram_jax/store/files.py): special files refused by every command."""
from __future__ import annotations

import os

import pytest

from tests.conftest import one_line, run_script

pytestmark = pytest.mark.e2e


def test_special_files_are_refused(tmp_path, run):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for argv in (["--data", str(fifo)], ["--data", "/dev/zero"], ["--config", str(fifo)]):
        one_line(run_script("train.py", *argv, "--out-dir", str(tmp_path / "o"), timeout=30), 2, "not a regular file")
    one_line(run_script("sample.py", "--checkpoint", str(run), "--prompt-file", str(fifo), timeout=30), 2,
             "not a regular file")
