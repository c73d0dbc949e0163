"""Pictures and TensorBoard events from short real runs: valid PNGs, clear errors without the optional extras."""
from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigram_jax.corpus import files
from bigram_jax.cli import plot as plot_cli
from bigram_jax.run import plot
from bigram_jax.errors import UserError
from tests.conftest import ROOT, run_script

SHORT = ("--max-iters", "300", "--eval-interval", "100", "--sample-tokens", "0")


def _train(out: Path, *extra: str) -> Path:
    """A short real tinyshakespeare run into `out`."""
    r = run_script("train.py", *SHORT, "--out-dir", str(out), *extra)
    assert r.returncode == 0, r.stderr
    return out


def _wired(flag: str) -> bool:
    """Whether scripts/train.py accepts `flag` yet."""
    from bigram_jax.cli.train import train_parser

    return flag in train_parser()._option_string_actions


def _have(module: str) -> bool:
    """Whether an optional extra is installed (found, not imported: collection stays fast)."""
    return importlib.util.find_spec(module) is not None


# the first fixture run also exercises train.py --plot/--tensorboard once they exist (one run fewer to pay for)
TRAIN_FLAGS = (("--plot",) if _wired("--plot") and _have("matplotlib") else ()) + \
    (("--tensorboard",) if _wired("--tensorboard") and _have("tensorboardX") else ())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two short runs on the real corpus: the lecture's constant lr, and a cosine schedule."""
    base = tmp_path_factory.mktemp("runs")
    return (_train(base / "constant", *TRAIN_FLAGS),
            _train(base / "cosine", "--lr-schedule", "cosine", "--warmup-iters", "20", "--max-iters", "200"))


def check_png(path: Path) -> tuple[int, int]:
    """Assert a complete PNG of sensible size and pixel dimensions; returns (width, height)."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert raw[12:16] == b"IHDR" and raw[-8:-4] == b"IEND", f"{path} is truncated"
    width, height = struct.unpack(">II", raw[16:24])
    assert 10_000 < len(raw) < 2_000_000, f"{path}: {len(raw)} bytes"
    assert 600 <= width <= 4000 and 400 <= height <= 2000 and width > height, (width, height)
    return width, height


def _bare_env(tmp: Path) -> dict[str, str]:
    """An environment where `import matplotlib` and `import tensorboardX` fail, as when the extras are absent."""
    for name in ("matplotlib", "tensorboardX"):
        (tmp / "shadow" / name).mkdir(parents=True, exist_ok=True)
        (tmp / "shadow" / name / "__init__.py").write_text(f"raise ImportError({'No module named ' + name!r})\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp / "shadow"), str(ROOT)]), "JAX_PLATFORMS": "cpu"}


def test_plot_script_overlays_runs(runs: tuple[Path, Path], tmp_path: Path) -> None:
    r = run_script("plot.py", "--run", str(runs[0]), "--run", str(runs[1]), "--out", str(tmp_path / "pics"))
    assert r.returncode == 0, r.stderr
    written = [Path(line) for line in r.stdout.split()]
    assert [p.name for p in written] == ["loss.png", "transitions.png"]
    for p in written:
        assert p.parent == tmp_path / "pics"
        check_png(p)


def test_plot_main_defaults_into_the_first_run(runs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    assert plot_cli.plot_main(["--run", str(runs[1])]) == 0
    paths = [runs[1] / "loss.png", runs[1] / "transitions.png"]
    assert capsys.readouterr().out.split() == [str(p) for p in paths]
    w, h = check_png(paths[1])
    assert w > 2 * h  # the three panels side by side


def test_tables_are_distributions_and_the_optimum_is_the_counts(runs: tuple[Path, Path]) -> None:
    learned, optimum, vocab, step = plot.tables(runs[0])
    assert step == 300 and learned.shape == optimum.shape == (len(vocab), len(vocab))
    np.testing.assert_allclose(learned.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(optimum.sum(axis=1), 1.0, atol=1e-9)
    q, u = vocab.index("q"), vocab.index("u")
    assert optimum[q, u] == 1.0  # in tinyshakespeare's train split 'q' is always followed by 'u'
    assert learned[q, u] < 1.0  # a softmax never puts all the mass on one character


def test_changed_data_file_is_a_clear_error(runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    real = files.load_text
    monkeypatch.setattr(files, "load_text", lambda p: (real(p)[0], "0" * 64))
    with pytest.raises(UserError, match="changed since"):
        plot.tables(runs[0])


def test_whitespace_tick_labels_are_visible() -> None:
    assert [plot.show_char(c) for c in "\n a\t"] == ["\\n", "␣", "a", "\\t"]


def test_missing_matplotlib_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(UserError, match=r"pip install 'bigram-jax\[plot\]'"):
        plot.check_available()


def test_plot_script_without_matplotlib_is_one_line(runs: tuple[Path, Path], tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot.py"), "--run", str(runs[0]),
                        "--out", str(tmp_path)], capture_output=True, text=True, env=_bare_env(tmp_path), timeout=120)
    assert r.returncode == 2
    assert r.stderr == f"plot.py: error: {plot.MISSING}\n"
    assert not list(tmp_path.glob("*.png"))


def test_plot_script_bad_run_dir(tmp_path: Path) -> None:
    r = run_script("plot.py", "--run", str(tmp_path / "nope"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("plot.py: error: no metrics.jsonl in") and r.stderr.count("\n") == 1


def _events(log_dir: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in the TFRecord event files under `log_dir`."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        raw, i = path.read_bytes(), 0
        while i < len(raw):  # TFRecord: u64 length, u32 crc, payload, u32 crc
            (n,) = struct.unpack("<Q", raw[i:i + 8])
            ev = Event.FromString(raw[i + 12:i + 12 + n])
            out += [(ev.step, v.tag, v.simple_value) for v in ev.summary.value]
            i += 16 + n
    return out


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


@pytest.mark.skipif(not TRAIN_FLAGS, reason="train.py --plot/--tensorboard not wired yet, or extras missing")
def test_train_plot_and_tensorboard_flags(runs: tuple[Path, Path]) -> None:
    if "--plot" in TRAIN_FLAGS:
        for name in ("loss.png", "transitions.png"):
            check_png(runs[0] / name)
    if "--tensorboard" in TRAIN_FLAGS:
        events = _events(runs[0])
        assert {"loss/train", "loss/val", "opt/lr", "perf/tokens_per_second"} <= {t for _, t, _ in events}
        assert max(s for s, _, _ in events) == 300


@pytest.mark.skipif(not _wired("--plot"), reason="train.py --plot is not wired yet")
def test_train_plot_without_matplotlib_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *SHORT, "--plot",
                        "--out-dir", str(tmp_path / "run")], capture_output=True, text=True,
                       env=_bare_env(tmp_path), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.endswith(f"train.py: error: {plot.MISSING}\n")
