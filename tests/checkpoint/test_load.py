"""Loading a checkpoint's params (bigram_jax/checkpoint/load.py) while a run rotates its checkpoints."""
from __future__ import annotations

import shutil
import signal
import time

import pytest

from tests.conftest import popen_script, run_cli, steps, wait_for

pytestmark = pytest.mark.usefixtures("own_cache")


def test_a_latest_checkpoint_deleted_under_the_loader_falls_back_to_the_one_before(run, tmp_path, monkeypatch):
    """Issue 20, case 9a: the latest step's folder disappears between picking it and reading it (a run rotating
    its checkpoints): load_checkpoint returns the step before instead of raising."""
    assert steps(run) == [100, 200, 300]
    from bigram_jax import load_checkpoint
    from bigram_jax.checkpoint.manager import Checkpoints

    d = tmp_path / "run"
    shutil.copytree(run, d)
    pick, deleted = Checkpoints.pick, []

    def pick_then_rotate(self, *a, **k):
        step = pick(self, *a, **k)
        if (a[0] if a else k.get("step")) is None and step == 300 and not deleted:
            shutil.rmtree(d / "checkpoints" / "300")
            deleted.append(step)
        return step

    monkeypatch.setattr(Checkpoints, "pick", pick_then_rotate)
    assert load_checkpoint(d).step == 200
    assert deleted


@pytest.mark.e2e
def test_sample_py_while_a_run_rotates_its_checkpoints(tmp_path):
    """Issue 20, case 9b: sample.py, ten times, on a run that saves every 20 steps and keeps one: every sample
    succeeds. The run is a process of its own; the samples are read in this one, at least ten of them and on until
    the run has moved its latest checkpoint on a few times while they were read."""
    out = tmp_path / "run"
    p = popen_script("train.py", "--out-dir", str(out), "--max-iters", "100000000", "--checkpoint-every", "20",
                     "--keep-checkpoints", "1", "--chunk-seconds", "0.02", "--sample-tokens", "0", "--eval-interval",
                     "20")
    try:
        wait_for(p, "step 40:")
        deadline = time.monotonic() + 300  # a hang guard only
        while not steps(out):  # saves are asynchronous: the first may still be on its way to the disk
            assert time.monotonic() < deadline and p.poll() is None, "no checkpoint was finished"
            time.sleep(0.02)
        results, latest = [], set()
        while len(results) < 10 or len(latest) < 3:
            assert time.monotonic() < deadline and p.poll() is None, (len(results), latest)
            results.append(run_cli("sample.py", "--checkpoint", str(out), "--num-tokens", "5"))
            latest.add(max(steps(out), default=None))
        assert p.poll() is None  # the run was rotating all along
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    bad = [(r.returncode, r.stderr[-500:]) for r in results if r.returncode != 0]
    assert not bad, bad
