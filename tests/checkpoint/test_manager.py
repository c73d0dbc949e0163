"""The checkpoint manager (bigram_jax/checkpoint/manager.py): round trip, retention, damage, a full disk."""
from __future__ import annotations

import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigram_jax import load_checkpoint
from bigram_jax.checkpoint import manager as ckpt
from bigram_jax.config import Config
from bigram_jax.model import table_of
from bigram_jax.train import init_state, train_steps
from tests.conftest import _leaves, ok, one_line, run_cli, run_script

FAST = ["--sample-tokens", "0", "--eval-interval", "100"]


def test_round_trip_keeps_values_and_types(tmp_path):
    cfg = Config()
    state = init_state(cfg, 65)
    state, _ = train_steps(state, jnp.arange(1000, dtype=jnp.int32) % 65, jnp.int32(7), cfg)
    with ckpt.Checkpoints(tmp_path / "checkpoints", keep=2) as ckpts:
        ckpts.save(state, {"vocab": "".join(map(chr, range(65, 130))), "config": cfg.to_dict()}, 2.5)
        ckpts.mgr.wait_until_finished()
        back = ckpts.restore_state(7, jax.eval_shape(lambda: init_state(cfg, 65)), ckpts.read_meta(7))
    assert type(back.opt_state[0]) is optax.ScaleByAdamState and jnp.issubdtype(back.key.dtype, jax.dtypes.prng_key)
    for x, y in zip(_leaves(state), _leaves(back), strict=True):
        np.testing.assert_array_equal(x, y)
    loaded = load_checkpoint(tmp_path)  # params only, no optimizer needed
    assert loaded.step == 7 and len(loaded.vocab) == 65 and loaded.config["batch_size"] == 32
    np.testing.assert_array_equal(table_of(loaded.params), table_of(state.params))


def test_keeps_latest_n_and_the_best(tmp_path):
    cfg = Config()
    state = init_state(cfg, 5)
    with ckpt.Checkpoints(tmp_path, keep=2) as ckpts:
        for step, val in zip(range(1, 6), [3.0, 1.0, 4.0, 5.0, 6.0]):
            ckpts.save(state.replace(step=jnp.int32(step)), {"vocab": "abcde", "config": {}}, val)
            ckpts.mgr.wait_until_finished()
        assert sorted(ckpts.mgr.all_steps()) == [2, 4, 5] and ckpts.mgr.best_step() == 2


def test_one_process_saves_runs_of_other_optimizers(tmp_path):
    """Two runs in one process (a notebook: another learning rate, another loss) save through one copy program:
    each state keeps its own optimizer and loss, and both saves succeed and restore."""
    for i, cfg in enumerate((Config(), Config(learning_rate=0.1, loss="gather"), Config(learning_rate=0.2))):
        state = init_state(cfg, 65)
        with ckpt.Checkpoints(tmp_path / f"c{i}") as ckpts:
            assert ckpts.save(state, {"config": cfg.to_dict(), "vocab_size": 65}, 1.0)
        with ckpt.Checkpoints(tmp_path / f"c{i}", read_only=True) as ckpts:
            back = ckpts.restore_state(0, jax.eval_shape(lambda: state), ckpts.read_meta(0))
        for a, b in zip(_leaves(back), _leaves(state), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.e2e
def test_a_damaged_metrics_file_leaves_the_intact_steps_reachable(run, tmp_path):
    """Sampled, loaded and resumed in this process; plotted by plot.py in a process of its own (the one run of
    scripts/plot.py as a command in these folders)."""
    d = tmp_path / "run"
    shutil.copytree(run, d)
    (d / "checkpoints" / "100" / "metrics" / "metrics").write_text("{broken")
    ok(run_cli("sample.py", "--checkpoint", str(d), "--num-tokens", "5"))
    assert load_checkpoint(d).step == 300
    r = ok(run_cli("train.py", "--resume", "--out-dir", str(d), "--max-iters", "400"))
    assert "step 400:" in r.stdout
    ok(run_script("plot.py", "--run", str(d), "--out", str(tmp_path / "png")))


def test_a_full_disk_stops_the_run_with_the_last_good_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("no tmpfs can be mounted here (needs root and a mount namespace): the full-disk case is untested")
    try:
        r = run_cli("train.py", "--out-dir", str(disk / "run"), "--max-iters", "100000", "--checkpoint-every", "100",
                    *FAST)
        one_line(r, 2, "cannot save")
        steps = sorted(int(p.name) for p in (disk / "run" / "checkpoints").iterdir() if p.name.isdigit())
        assert steps and load_checkpoint(disk / "run").step == steps[-1]  # the last good one loads
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_large_cpu_state_is_saved_in_place_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    """A state past IN_PLACE_BYTES on the CPU is written from its own buffers (no copy), the run waiting for the
    write before they are donated to the next chunk: what it saves resumes exactly as a run that never stopped.
    (Every state here counts as large; a 65 x 65 one saves the copy's way otherwise.)"""
    from tests.conftest import _assert_same

    assert not ckpt.saved_in_place(init_state(Config(), 65))  # 150 KB: copied, the write going on meanwhile
    calls = []
    monkeypatch.setattr(ckpt, "IN_PLACE_BYTES", 0)
    monkeypatch.setattr(ckpt, "copy_state", lambda s: calls.append(s) or s)  # must not be used
    args = [*FAST, "--eval-interval", "20", "--checkpoint-every", "20"]
    ok(run_cli("train.py", "--out-dir", str(tmp_path / "a"), "--max-iters", "40", *args))
    ok(run_cli("train.py", "--out-dir", str(tmp_path / "b"), "--max-iters", "20", *args))
    ok(run_cli("train.py", "--out-dir", str(tmp_path / "b"), "--max-iters", "40", "--resume", *args))
    assert not calls
    _assert_same(tmp_path / "a", tmp_path / "b")
