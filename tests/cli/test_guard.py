"""What every command shares (bigram_jax/cli/guard.py): installed, named, no abbreviated flags."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import one_line, run_cli


@pytest.mark.e2e
def test_console_commands_are_installed_beside_the_scripts():
    """pyproject's [project.scripts]: each command answers --help, and a bad flag is one line."""
    import shutil
    import subprocess
    import tomllib

    from tests.conftest import ROOT

    commands = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"bigram-jax-train", "bigram-jax-sample", "bigram-jax-plot"} <= set(commands)
    for name in commands:
        exe = shutil.which(name)
        if exe is None:
            pytest.skip(f"{name} is not installed here (pip install -e . installs it)")
        assert subprocess.run([exe, "--help"], capture_output=True, text=True).returncode == 0, name
        r = subprocess.run([exe, "--no-such-flag"], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
@pytest.mark.parametrize("command, flag", [("bigram-jax-train", "--batch-size"), ("bigram-jax-sample", "--num-tokens")])
def test_console_commands_name_themselves(command, flag):
    exe = Path(sys.executable).parent / command
    if not exe.is_file():
        pytest.skip(f"{command} is not installed (pip install -e .)")
    r = subprocess.run([str(exe), flag, "x"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    one_line(r, 2, "'x'")
    assert r.stderr.startswith(f"{command}:"), r.stderr


@pytest.mark.usefixtures("own_cache")
def test_an_abbreviated_flag_is_refused(tmp_path):
    r = run_cli("train.py", "--lr", "0.1", "--max-iters", "10", "--out-dir", str(tmp_path / "out"))
    one_line(r, 2, "unrecognized arguments: --lr")
    assert not (tmp_path / "out").exists()
