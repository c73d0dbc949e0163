"""The start-up section: what a user waits for, as ratios to the floor of `import jax, flax, optax` measured in
the same run, and where the time of one whole lecture job goes."""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from . import timing
from .context import Ctx
from .paths import ROOT

FLOOR = [sys.executable, "-c", "import jax, flax, optax"]


def _median(cmd: list[str], env: dict, repeats: int, expect: int = 0) -> float:
    """Median wall seconds of `repeats` runs of a command."""
    return statistics.median(timing.run_process(cmd, env, expect)[0] for _ in range(repeats))


def _jobs(c: Ctx, env: dict, tmp: str, repeats: int) -> tuple[list[float], list[dict]]:
    """Wall seconds of the lecture's job with the compile cache warm, and each run's own account of its time."""
    walls, accounts = [], []
    for r in range(repeats):
        out = Path(tmp) / f"warm{r}"
        walls.append(timing.run_process([sys.executable, "scripts/train.py", "--out-dir", str(out)], env)[0])
        s = json.loads((out / "summary.json").read_text())
        accounts.append({**s["seconds"], "exit": timing.LAST_END[0] - s["ended_at"]})
    return walls, accounts


def sec_startup(c: Ctx) -> dict:
    """Ratios to the import floor: the whole job (warm and with an empty compile cache), --help, a bad flag,
    sample.py, and the lecture's torch job; the job's own breakdown of its time."""
    n = max(1, min(c.repeats, c.sizes.job_repeats))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(c.corpus.path)}
    train = [sys.executable, "scripts/train.py"]
    with tempfile.TemporaryDirectory() as tmp:
        timing.run_process([*train, "--out-dir", f"{tmp}/first"], env)  # fills the compile cache
        floor = _median(FLOOR, env, n)
        walls, accounts = _jobs(c, env, tmp, n)
        cold = statistics.median(timing.run_process([*train, "--out-dir", f"{tmp}/cold{r}"], {
            **env, "XDG_CACHE_HOME": f"{tmp}/empty{r}"})[0] for r in range(n))
        figures = {"job_warm": statistics.median(walls), "job_cold_cache": cold,
                   "help": _median([*train, "--help"], env, n), "bad_flag": _median([*train, "--bogus"], env, n, 2),
                   "sample_200": _median([sys.executable, "scripts/sample.py", "--checkpoint", f"{tmp}/warm0",
                                          "--num-tokens", "200"], env, n),
                   "torch_job": _median([sys.executable, "-m", "torch_ref.model", "--data", str(c.corpus.path)],
                                        env, n)}
    breakdown = {k: statistics.median(a[k] for a in accounts) for k in accounts[0] if accounts[0][k] is not None}
    return {"floor_s": floor, "seconds": figures, "ratio_to_floor": {k: v / floor for k, v in figures.items()},
            "job_vs_torch": figures["job_warm"] / figures["torch_job"], "job_breakdown_s": breakdown}
