"""TensorBoard events (bigram_jax/run/tblog.py): readable scalars, a clear error without tensorboardX."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bigram_jax.errors import UserError
from tests.conftest import _events


def test_tensorboard_logger_writes_readable_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")
    from bigram_jax.run.tblog import TensorBoardLogger

    with TensorBoardLogger(tmp_path / "tb") as tb:
        tb.log_eval(0, {"step": 0, "train_loss": 4.67, "val_loss": 4.66, "batch_loss": None, "lr": 0.01})
        tb.log_eval(300, {"train_loss": 2.81, "val_loss": 2.82, "batch_loss": 3.49, "lr": 0.01,
                          "tokens_per_second": 2.5e6, "elapsed_seconds": 1.0})
    files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    got = {(s, t): v for s, t, v in _events(tmp_path / "tb")}
    assert set(got) == {(0, "loss/train"), (0, "loss/val"), (0, "opt/lr"), (300, "loss/train"), (300, "loss/val"),
                        (300, "loss/batch"), (300, "opt/lr"), (300, "perf/tokens_per_second")}
    assert got[(300, "loss/val")] == pytest.approx(2.82) and got[(300, "perf/tokens_per_second")] == 2.5e6


def test_missing_tensorboardx_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bigram_jax.run.tblog import MISSING, TensorBoardLogger

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(UserError, match=r"pip install 'bigram-jax\[tensorboard\]'") as e:
        TensorBoardLogger(tmp_path)
    assert str(e.value) == MISSING
