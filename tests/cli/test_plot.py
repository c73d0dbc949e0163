"""scripts/plot.py (bigram_jax/cli/plot.py): runs overlaid into PNGs, its default folder, one-line errors."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bigram_jax.cli import plot as plot_cli
from bigram_jax.run import plot
from tests.conftest import ROOT, _bare_env, check_png, run_cli


def test_plot_script_overlays_runs(runs: tuple[Path, Path], tmp_path: Path) -> None:
    r = run_cli("plot.py", "--run", str(runs[0]), "--run", str(runs[1]), "--out", str(tmp_path / "pics"))
    assert r.returncode == 0, r.stderr
    written = [Path(line) for line in r.stdout.split()]
    assert [p.name for p in written] == ["loss.png", "transitions.png"]
    for p in written:
        assert p.parent == tmp_path / "pics"
        check_png(p)


def test_plot_main_defaults_into_the_first_run(runs: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    run = shutil.copytree(runs[1], tmp_path / runs[1].name)  # a copy: the shared runs stay as they were trained
    assert plot_cli.plot_main(["--run", str(run)]) == 0
    paths = [run / "loss.png", run / "transitions.png"]
    assert capsys.readouterr().out.split() == [str(p) for p in paths]
    w, h = check_png(paths[1])
    assert w > 2 * h  # the three panels side by side


@pytest.mark.e2e
def test_plot_script_without_matplotlib_is_one_line(runs: tuple[Path, Path], tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot.py"), "--run", str(runs[0]),
                        "--out", str(tmp_path)], capture_output=True, text=True, env=_bare_env(tmp_path), timeout=120)
    assert r.returncode == 2
    assert r.stderr == f"plot.py: error: {plot.MISSING}\n"
    assert not list(tmp_path.glob("*.png"))


def test_plot_script_bad_run_dir(tmp_path: Path) -> None:
    r = run_cli("plot.py", "--run", str(tmp_path / "nope"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("plot.py: error: no metrics.jsonl in") and r.stderr.count("\n") == 1
