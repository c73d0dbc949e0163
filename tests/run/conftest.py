"""What the tests of the run's parts share: a finished run trained in this process."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHORT, TRAIN_FLAGS, ok, run_cli


@pytest.fixture(scope="session")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lecture's constant-lr run of conftest's `runs` (300 steps on the real corpus, with train.py --plot and
    --tensorboard where they are wired), trained in this process. Shared by the session: its users read it."""
    out = tmp_path_factory.mktemp("drawn") / "constant"
    ok(run_cli("train.py", *SHORT, "--out-dir", str(out), *TRAIN_FLAGS))
    return out
