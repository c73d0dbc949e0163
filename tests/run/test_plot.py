"""A run's pictures (bigram_jax/run/plot.py): the tables drawn, without matplotlib, train.py --plot."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigram_jax.corpus import files
from bigram_jax.errors import UserError
from bigram_jax.run import plot
from tests.conftest import ROOT, SHORT, TRAIN_FLAGS, _bare_env, _events, _wired, check_png


def test_tables_are_distributions_and_the_optimum_is_the_counts(drawn: Path) -> None:
    learned, optimum, vocab, step = plot.tables(drawn)
    assert step == 300 and learned.shape == optimum.shape == (len(vocab), len(vocab))
    np.testing.assert_allclose(learned.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(optimum.sum(axis=1), 1.0, atol=1e-9)
    q, u = vocab.index("q"), vocab.index("u")
    assert optimum[q, u] == 1.0  # in tinyshakespeare's train split 'q' is always followed by 'u'
    assert learned[q, u] < 1.0  # a softmax never puts all the mass on one character


def test_changed_data_file_is_a_clear_error(drawn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = files.load_text
    monkeypatch.setattr(files, "load_text", lambda p: (real(p)[0], "0" * 64))
    with pytest.raises(UserError, match="changed since"):
        plot.tables(drawn)


def test_whitespace_tick_labels_are_visible() -> None:
    assert [plot.show_char(c) for c in "\n a\t"] == ["\\n", "␣", "a", "\\t"]


def test_missing_matplotlib_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(UserError, match=r"pip install 'bigram-jax\[plot\]'"):
        plot.check_available()


@pytest.mark.skipif(not TRAIN_FLAGS, reason="train.py --plot/--tensorboard not wired yet, or extras missing")
def test_train_plot_and_tensorboard_flags(drawn: Path) -> None:
    if "--plot" in TRAIN_FLAGS:
        for name in ("loss.png", "transitions.png"):
            check_png(drawn / name)
    if "--tensorboard" in TRAIN_FLAGS:
        events = _events(drawn)
        assert {"loss/train", "loss/val", "opt/lr", "perf/tokens_per_second"} <= {t for _, t, _ in events}
        assert max(s for s, _, _ in events) == 300


@pytest.mark.e2e
@pytest.mark.skipif(not _wired("--plot"), reason="train.py --plot is not wired yet")
def test_train_plot_without_matplotlib_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *SHORT, "--plot",
                        "--out-dir", str(tmp_path / "run")], capture_output=True, text=True,
                       env=_bare_env(tmp_path), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.endswith(f"train.py: error: {plot.MISSING}\n")


def _metrics_only_run(folder: Path) -> Path:
    """A run folder with two eval rows in metrics.jsonl and nothing else (an interrupted run's)."""
    folder.mkdir()
    rows = [{"step": s, "train_loss": 4.0 - s / 100, "val_loss": 4.1 - s / 100} for s in (0, 100)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_summary_json_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """summary.json (and config.json) are read through the checked open: a FIFO put there is one line, at once;
    it used to be read by name, and the read blocked."""
    from tests.store.test_files import _unblocked

    run = _metrics_only_run(tmp_path / "run")
    os.mkfifo(run / "summary.json")
    with _unblocked(run / "summary.json"), pytest.raises(UserError, match="summary.json .* is not a regular file"):
        plot.plot_losses([run], tmp_path / "loss.png")
    (run / "summary.json").unlink()
    os.mkfifo(run / "config.json")
    with _unblocked(run / "config.json"), pytest.raises(UserError, match="config.json .* is not a regular file"):
        plot.plot_losses([run], tmp_path / "loss.png")


def test_an_oversized_metrics_or_summary_file_is_refused_unread(tmp_path: Path) -> None:
    """A metrics.jsonl over METRICS_MAX, or a summary.json over RECORD_MAX, is refused by its size before a byte
    is read (a sparse file: no disk); they used to be read whole."""
    from bigram_jax.run.run_dir import METRICS_MAX

    run = _metrics_only_run(tmp_path / "run")
    with open(run / "summary.json", "wb") as f:
        f.truncate(plot.RECORD_MAX + 1)
    with pytest.raises(UserError, match="summary.json .* over the 64 MB such a file can be"):
        plot.plot_losses([run], tmp_path / "loss.png")
    with open(run / "metrics.jsonl", "ab") as f:
        f.truncate(METRICS_MAX + 1)
    with pytest.raises(UserError, match="metrics file .* over the 1024 MB such a file can be"):
        plot.plot_losses([run], tmp_path / "loss.png")
