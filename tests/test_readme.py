"""The README's two commands, and CI running the second one verbatim."""
from __future__ import annotations

import re

from tests.conftest import ROOT


def _two_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_commands():
    cmds = _two_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    assert cmds[0].endswith("python scripts/train.py") and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _two_commands()[1] in ci
    assert ci.index("torch==2.13.0") < ci.index("'.[dev]'")  # the CPU torch before anything that names torch


def test_every_config_key_is_documented():
    from bigram_jax.config import FIELDS

    assert all(f.metadata.get("help") for f in FIELDS.values())
    readme = (ROOT / "README.md").read_text()
    assert all(f"--{k.replace('_', '-')}" in readme for k in FIELDS)
