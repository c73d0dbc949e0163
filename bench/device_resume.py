"""The device check's resume part: a run stopped halfway and resumed on this device ends bit-identical to one run in
one go; and a checkpoint written on a CPU (tests/fixtures/f6817d1_run, 20 steps on tests/fixtures/tiny.txt)
restores here with the same params (its arrays' checksums, computed on this device, are the CPU's) and resumes,
logging the losses the same resume logs on this machine's CPU backend.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from .device_parts import metrics_rows, train_py
from .paths import ROOT

FIXTURE, FIXTURE_DATA, FIXTURE_STEPS = "tests/fixtures/f6817d1_run", "tests/fixtures/tiny.txt", 30
CPU_TOLERANCE = 1e-5  # another backend sums in another order: float32 rounding, not another model


def _train(env: dict, deadline: float, *flags: str) -> None:
    """One training process of the part, without the closing sample (its figures are the checkpoints and logs)."""
    train_py(env, deadline, "--sample-tokens", "0", *flags)


def _rows(out: Path) -> dict[int, dict]:
    """metrics.jsonl by step, without the clock readings."""
    return {r["step"]: r for r in metrics_rows(out)}


def _final(out: Path) -> tuple[dict, object]:
    """(the last checkpoint's array checksums, its table on the host), loaded on this device."""
    import numpy as np

    from bigram_jax.checkpoint.load import load_checkpoint
    from bigram_jax.model import table_of

    ck = load_checkpoint(out)
    return ck.meta["checksums"], np.asarray(table_of(ck.params))


def _run_all(tmp: Path, env: dict, steps: int, deadline: float) -> None:
    """Every training process of the part, before this process starts a backend of its own (on a GPU it would
    take 75% of the memory they need): `steps` in one go; steps / 2, then --resume to `steps`; the CPU's fixture
    resumed to FIXTURE_STEPS here and on this machine's CPU backend."""
    every = ["--eval-interval", str(steps // 4)]
    _train(env, deadline, "--max-iters", str(steps), "--out-dir", str(tmp / "whole"), *every)
    _train(env, deadline, "--max-iters", str(steps // 2), "--out-dir", str(tmp / "halves"), *every)
    _train(env, deadline, "--resume", "--max-iters", str(steps), "--out-dir", str(tmp / "halves"))
    for where, extra in (("device", {}), ("cpu", {"JAX_PLATFORMS": "cpu"})):
        shutil.copytree(ROOT / FIXTURE, tmp / f"fixture_{where}")
        _train({**env, **extra}, deadline, "--resume", "--out-dir", str(tmp / f"fixture_{where}"),
               "--data", FIXTURE_DATA, "--max-iters", str(FIXTURE_STEPS))


def _bit_exact(tmp: Path, steps: int) -> dict:
    """The run in one go against the resumed one: the same state and losses, to the bit."""
    (sums_a, table_a), (sums_b, table_b) = _final(tmp / "whole"), _final(tmp / "halves")
    return {"steps": steps, "rows_equal": _rows(tmp / "whole") == _rows(tmp / "halves"),
            "checksums_equal": sums_a == sums_b,
            "table_equal": bool((table_a == table_b).all()) and table_a.dtype == table_b.dtype}


def _cpu_fixture(tmp: Path) -> dict:
    """The CPU-written fixture restored here (its exact losses recomputed), and its resumes compared."""
    from bigram_jax.checkpoint.load import load_checkpoint

    ck = load_checkpoint(ROOT / FIXTURE)  # raises if an array's checksum, computed here, is not the CPU's
    here = _exact_losses(ck.params)
    rows = {where: _rows(tmp / f"fixture_{where}")[FIXTURE_STEPS] for where in ("device", "cpu")}
    diff = max(abs(rows["device"][k] - rows["cpu"][k]) for k in ("train_loss", "val_loss", "batch_loss"))
    written = {k: ck.meta[k] for k in ("train_loss", "val_loss")}
    return {"step": ck.step, "params_checksums_verified": True, "exact_losses_written_on_cpu": written,
            "exact_losses_here": here, "exact_loss_diff": max(abs(here[k] - written[k]) for k in written),
            f"logged_at_step_{FIXTURE_STEPS}": rows, "max_abs_diff_vs_cpu": diff}


def _exact_losses(params) -> dict:
    """The fixture's exact train and val losses, from params restored on this device."""
    from bigram_jax.config import make_config
    from bigram_jax.corpus.load import load_corpus

    corpus = load_corpus(make_config({"data": str(ROOT / FIXTURE_DATA)}))
    return dict(zip(("train_loss", "val_loss"), corpus.exact_losses(params)))


def part_resume(quick: bool, box: float) -> dict:
    """Bit-exact resume on this device, and the CPU's checkpoint resumed here (the losses against the CPU's)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    steps = 40 if quick else 600
    with tempfile.TemporaryDirectory() as tmp:
        _run_all(Path(tmp), env, steps, time.monotonic() + box - 15)  # 15 s left to load and compare
        exact, fixture = _bit_exact(Path(tmp), steps), _cpu_fixture(Path(tmp))
    return {"bit_exact": exact, "cpu_fixture": fixture, "checks": {
        "resumed run is bit-identical to one run": all(exact[k] for k in ("rows_equal", "checksums_equal",
                                                                           "table_equal")),
        "CPU checkpoint restores with the same params": fixture["params_checksums_verified"],
        f"CPU checkpoint resumes within {CPU_TOLERANCE:g} of the CPU": fixture["max_abs_diff_vs_cpu"] <= CPU_TOLERANCE}}
