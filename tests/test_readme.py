"""The README's commands (the main job; the tests on each supported stack), and CI running the test commands verbatim."""
from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_has_the_main_command_and_one_test_command_per_stack():
    cmds = _commands()
    assert len(cmds) == 3 and all("\n" not in c for c in cmds)
    assert cmds[0].endswith("python scripts/train.py") and all("pytest" in c for c in cmds[1:])
    assert cmds[1].startswith("python3 -m venv") and cmds[2].startswith("python3.13 -m venv")


def test_ci_runs_the_readme_test_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert all(c in ci for c in _commands()[1:])
    assert ci.index("torch==2.13.0") < ci.index("'.[dev]'")  # the CPU torch before anything that names torch


def test_every_config_key_is_documented():
    from bigram_jax.config import FIELDS

    assert all(f.metadata.get("help") for f in FIELDS.values())
    readme = (ROOT / "README.md").read_text()
    assert all(f"--{k.replace('_', '-')}" in readme for k in FIELDS)


@pytest.mark.e2e
def test_the_orbax_snippet_reads_a_checkpoint_without_bigram_jax(tmp_path):
    """The README's "read with orbax alone" block, run as written in a folder holding runs/demo: it loads the
    latest step's table and metadata, and bigram_jax is never imported; orbax says nothing on the way (no absl
    warnings, no "Sharding info not provided")."""
    import subprocess
    import sys

    from tests.conftest import run_cli

    text = (ROOT / "README.md").read_text().split("### A checkpoint read with orbax alone", 1)[1]
    snippet = re.search(r"```python\n(.+?)\n```", text, flags=re.S).group(1)
    r = run_cli("train.py", "--max-iters", "100", "--eval-interval", "50", "--sample-tokens", "0", "--out-dir",
                "runs/demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    check = snippet + "\nimport sys\nassert 'bigram_jax' not in sys.modules\nprint(float(table.sum()))\n"
    r = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PATH": "", "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[:5] == ["100", "(65,", "65)", "chars", "0.01"], r.stdout  # step, shape, tokenizer, lr
    assert r.stderr == ""
