"""The host feed (bigram_jax/run/feed.py): host-fed runs equal device-resident ones, resumed, scaled out."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bigram_jax.config import make_config
from bigram_jax.corpus.load import load_corpus
from bigram_jax.errors import UserError
from tests.conftest import _walk, assert_same_losses, ok, run_cli, two_processes, train_on_devices

pytestmark = pytest.mark.usefixtures("own_cache")


def train(out: Path, *args: str) -> tuple[dict, list[dict], str]:
    """train.py in this process (on its one CPU device); (summary, metrics rows, stdout), as train_on_devices."""
    r = ok(run_cli("train.py", "--out-dir", str(out), *args))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), rows, r.stdout


def test_a_file_that_changes_during_the_run_stops_it(tmp_path):
    from bigram_jax.devices.parallel import make_mesh
    from bigram_jax.run.feed import HostFeed
    from bigram_jax.train import init_state

    path = tmp_path / "t.bin"
    _walk(20_000, 40).astype("<u2").tofile(path)
    cfg = make_config({"data": str(path), "data_on": "host"})
    corpus = load_corpus(cfg)
    state = init_state(cfg, 40)
    feed = HostFeed(corpus, cfg, state, make_mesh(cfg, 40))
    try:
        state, _ = feed.advance(state, 0, 10)
        with open(path, "r+b") as f:  # truncated mid-run
            f.truncate(20_000)
        with pytest.raises(UserError, match="changed during the run"):
            for step in range(10, 10 * 64, 64):  # past the blocks gathered before the change
                state, _ = feed.advance(state, step, 64)
    finally:
        feed.close()


@pytest.mark.parametrize("data, loss", [("shakespeare", "counts"), ("tokens", "counts"), ("tokens", "gather")])
def test_host_fed_and_device_resident_runs_are_bit_identical(tmp_path, shakespeare_path, data, loss):
    path = shakespeare_path
    if data == "tokens":
        path = tmp_path / "t.bin"
        _walk(300_000, 300).astype("<u2").tofile(path)
    args = ("--data", str(path), "--loss", loss, "--max-iters", "300", "--eval-interval", "100",
            "--sample-tokens", "50")
    s_dev, rows_dev, _ = train(tmp_path / "device", *args, "--data-on", "device")
    s_host, rows_host, _ = train(tmp_path / "host", *args, "--data-on", "host")
    assert_same_losses(rows_dev, rows_host, 0.0)  # bit-identical, not merely close
    # batch losses are summed per chunk, and chunks follow the clock: equal up to the order of the additions
    np.testing.assert_allclose([r["batch_loss"] or 0 for r in rows_dev], [r["batch_loss"] or 0 for r in rows_host],
                               rtol=1e-6)
    assert s_dev["sample"] == s_host["sample"]


def test_resume_on_the_host_fed_path_continues_the_same_run(tmp_path):
    path = tmp_path / "t.bin"
    _walk(100_000, 64).astype("<u2").tofile(path)
    args = ("--data", str(path), "--data-on", "host", "--eval-interval", "50", "--sample-tokens", "0")
    _, full, _ = train(tmp_path / "full", *args, "--max-iters", "130")
    train(tmp_path / "half", *args, "--max-iters", "70")
    ok(run_cli("train.py", "--resume", "--out-dir", str(tmp_path / "half"), "--data-on", "host", "--max-iters", "130"))
    half = [json.loads(x) for x in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in half] == [0, 50, 70, 100, 130]  # the first run ended at 70
    assert_same_losses(full, [r for r in half if r["step"] != 70], 0.0)


@pytest.mark.e2e
def test_host_fed_four_devices_and_two_processes_match_one_device(tmp_path):
    """Four devices need a process of their own (XLA_FLAGS), two processes two; the one-device run is this one."""
    path = tmp_path / "t.npy"
    np.save(path, _walk(200_000, 256).astype(np.int32))
    args = ("--data", str(path), "--data-on", "host", "--max-iters", "200", "--eval-interval", "100",
            "--sample-tokens", "0")
    _, one, _ = train(tmp_path / "one", *args)
    _, four, out = train_on_devices(tmp_path / "four", *args, devices=4)
    assert "over 4 cpu device(s)" in out
    assert_same_losses(one, four, 1e-5)
    p0, p1 = two_processes(tmp_path / "two", *args)
    assert p0.returncode == p1.returncode == 0, p0.stderr + p1.stderr
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert_same_losses(one, two, 1e-5)
