"""The job section: the lecture's whole job as alternated processes, scripts/train.py against torch_ref.model."""
from __future__ import annotations

import os
import statistics
import sys
import tempfile

from .context import Ctx, Sizes
from .paths import ROOT, shown
from .timing import run_process


def commands(c: Ctx) -> dict[str, list[str]]:
    """The two command lines, sized by c.sizes.job (no flags at the lecture's own sizes: both default to them)."""
    steps, every, sample = c.sizes.job
    flags = [] if c.sizes.job == Sizes.job else [
        "--max-iters", str(steps), "--eval-interval", str(every), "--sample-tokens", str(sample)]
    return {"jax": [sys.executable, "scripts/train.py", *flags],
            "torch": [sys.executable, "-m", "torch_ref.model", "--data", str(c.corpus.path), *flags]}


def sec_job(c: Ctx) -> dict:
    """Wall time and peak RSS of each whole job, medians of alternated runs (so load drifts hit both alike)."""
    steps, every, sample = c.sizes.job
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(c.corpus.path)}
    cmds = commands(c)
    runs: dict[str, list] = {k: [] for k in cmds}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(min(c.repeats, c.sizes.job_repeats)):
            for k, cmd in cmds.items():  # a fresh out-dir each time: train.py refuses one holding checkpoints
                runs[k].append(run_process(cmd + (["--out-dir", f"{tmp}/{r}"] if k == "jax" else []), env))
    med = {k: {"wall_s": statistics.median(w for w, _ in v), "peak_rss_mib": statistics.median(m for _, m in v)}
           for k, v in runs.items()}
    # shown as run from the repo, the corpus by file name: these strings reach the committed page
    shown_cmds = {k: " ".join(shown(a) if os.path.isabs(a) else a for a in v[1:]) for k, v in cmds.items()}
    return {**med, "runs": runs, "steps": steps, "eval_interval": every, "sample_tokens": sample,
            "commands": shown_cmds, "wall_ratio": med["jax"]["wall_s"] / med["torch"]["wall_s"]}
