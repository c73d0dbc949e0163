"""What the tests of torch_ref share: a fresh seed per test, and `python -m` runs of its modules."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tests.conftest import ROOT


def _seed() -> int:
    """A fresh seed per test (shown in failure messages, so a failure can be replayed with --seed)."""
    return int(np.random.SeedSequence().entropy % 2**32)


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m module args` with the repo importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)
