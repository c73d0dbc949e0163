"""Scale-out (bigram_jax/devices/parallel.py): 1 vs 4 devices, a sharded table, two processes."""
from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.conftest import assert_same_losses, devices_env, ok, one_line, run_cli, run_script, two_processes
from tests.conftest import free_port as _free_port
from tests.conftest import train_on_devices as train

# several CPU devices (XLA_FLAGS) and several processes need processes of their own; the one-device runs they are
# compared with, and what needs no devices at all, run in this process (its one CPU device)
pytestmark = pytest.mark.e2e


def train_here(out: Path, *args: str) -> tuple[dict, list[dict], str]:
    """train.py in this process, on its one CPU device; (summary, metrics rows, stdout), as `train`."""
    r = ok(run_cli("train.py", "--out-dir", str(out), *args))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), rows, r.stdout


V_BIG = 2048  # a 4M-parameter table: 16 MB, 48 MB with both AdamW moments; over B*T = 512, so 'auto' is gather


@pytest.fixture(scope="module")
def synth_big(tmp_path_factory) -> Path:
    """A few million tokens over a V_BIG-token vocabulary, written by scripts/synth_tokens.py (in a process of its
    own: these folders' one run of it as a command)."""
    path = tmp_path_factory.mktemp("synth") / "train.bin"
    ok(run_script("synth_tokens.py", "--vocab-size", str(V_BIG), "--tokens", "3000000", "--out", str(path)))
    return path


@pytest.fixture(scope="module")
def synth_small(tmp_path_factory) -> Path:
    """200k tokens over a 512-token vocabulary (.npy): rows split evenly over 2 or 4 devices."""
    path = tmp_path_factory.mktemp("synth") / "tokens.npy"
    ok(run_cli("synth_tokens.py", "--vocab-size", "512", "--tokens", "200000", "--out", str(path)))
    return path


@pytest.mark.parametrize("loss", ["counts", "gather"])
def test_one_and_four_devices_give_the_same_run(tmp_path, loss):
    args = ("--max-iters", "500", "--eval-interval", "100", "--sample-tokens", "100", "--loss", loss)
    s1, rows1, _ = train_here(tmp_path / "one", *args)
    s4, rows4, out4 = train(tmp_path / "four", *args, devices=4)
    assert s1["mesh"] == {"data": 1, "model": 1} and len(s1["devices"]) == 1
    assert s4["mesh"] == {"data": 4, "model": 1} and len(s4["devices"]) == 4
    assert "mesh: data=4 x model=1 over 4 cpu device(s) in 1 process(es)" in out4
    # the same global batches: only the order of the loss/gradient reductions may differ
    assert_same_losses(rows1, rows4, 1e-5)
    assert abs(s1["val_loss"] - s4["val_loss"]) <= 1e-5 and s4["val_loss"] < rows4[0]["val_loss"] - 1.5


def test_batch_that_does_not_divide_the_devices_is_refused(tmp_path):
    r = run_script("train.py", "--out-dir", str(tmp_path / "r"), "--batch-size", "30", env=devices_env(4))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("train.py: error: batch_size 30 must divide by the data-parallel device "
                                       "count 4 (4 devices, model_parallel 1): try --batch-size 32")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("mp, message", [("3", "model_parallel 3 must divide the number of devices (4)"),
                                         ("2", "model_parallel 2 must divide the vocabulary size 65")])
def test_bad_model_parallel_is_one_line(tmp_path, mp, message):
    r = run_script("train.py", "--out-dir", str(tmp_path / "r"), "--model-parallel", mp, env=devices_env(4))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_sharded_table_matches_the_unsharded_run_and_resumes_on_one_device(tmp_path, synth_big):
    args = ("--data", str(synth_big), "--batch-size", "64", "--learning-rate", "0.1", "--eval-interval", "5",
            "--sample-tokens", "30")
    s4, rows4, out4 = train(tmp_path / "four", *args, "--max-iters", "10", "--model-parallel", "4", devices=4)
    assert "mesh: data=1 x model=4" in out4 and s4["loss"] == "gather" and s4["vocab_size"] == V_BIG
    # each device holds a quarter of the table and of both AdamW moments
    quarter = [V_BIG // 4, V_BIG]
    assert s4["shard_shapes"] == {"params": quarter, "mu": quarter, "nu": quarter}
    assert s4["table_and_moments_bytes_per_device"] == 3 * 4 * V_BIG * V_BIG // 4
    s1, rows1, _ = train_here(tmp_path / "one", *args, "--max-iters", "15")
    assert s1["shard_shapes"]["params"] == [V_BIG, V_BIG]
    assert_same_losses(rows4, rows1[:3], 1e-5)
    assert rows1[-1]["val_loss"] < rows1[0]["val_loss"] - 0.1  # it learns
    ids = [int(t) for t in s4["sample"].split()]
    assert len(ids) == 31 and all(0 <= i < V_BIG for i in ids)
    # the 4-device checkpoint (rows on 4 devices) resumes on 1 device (this process's) and continues the same run
    ok(run_cli("train.py", "--out-dir", str(tmp_path / "four"), "--resume", "--max-iters", "15"))
    rows = [json.loads(x) for x in (tmp_path / "four" / "metrics.jsonl").read_text().splitlines()]
    assert_same_losses(rows, rows1, 1e-5)


@pytest.mark.parametrize("loss", ["counts", "gather"])
def test_both_losses_train_a_row_sharded_table(tmp_path, synth_small, loss):
    args = ("--data", str(synth_small), "--max-iters", "200", "--eval-interval", "100", "--loss", loss)
    s4, rows4, _ = train(tmp_path / "four", *args, "--model-parallel", "2", devices=4)
    assert s4["mesh"] == {"data": 2, "model": 2} and s4["loss"] == loss
    assert s4["shard_shapes"] == {"params": [256, 512], "mu": [256, 512], "nu": [256, 512]}
    _, rows1, _ = train_here(tmp_path / "one", *args)
    assert_same_losses(rows4, rows1, 1e-5)
    assert rows4[-1]["val_loss"] < rows4[0]["val_loss"] - 1.0


def test_two_processes_match_one_process(tmp_path, synth_small):
    # 4 devices in 2 processes: the batch split over 'data', the table's rows over 'model' (V = 512)
    args = ("--data", str(synth_small), "--eval-interval", "100", "--sample-tokens", "20", "--model-parallel", "2")
    # a SIGTERM to one process stops both at the same step, after one checkpoint
    p0, p1 = two_processes(tmp_path / "multi", *args, "--max-iters", "1000000", stop_after=1.0)
    assert p0.returncode == p1.returncode == 128 + signal.SIGTERM, p0.stderr + p1.stderr
    assert "mesh: data=2 x model=2 over 4 cpu device(s) in 2 process(es)" in p0.stdout
    # only process 0 logs (gloo itself prints a line when it connects)
    # (gloo's C++ threads may interleave their connect lines, so only our own lines are looked for)
    ours = ("step ", "backend:", "mesh:", "data:", "floor:", "resumed", "note:")
    assert "step 0:" in p0.stdout and not [ln for ln in p1.stdout.splitlines() if ln.startswith(ours)]
    stop = int(re.search(r"stopped by SIGTERM at step (\d+)", p0.stderr).group(1))
    assert f"at step {stop};" in p1.stderr
    # resume across processes: orbax restores each process's shards of the checkpoint
    end = stop + 150
    p0, p1 = two_processes(tmp_path / "multi", "--resume", "--max-iters", str(end), "--model-parallel", "2")
    assert p0.returncode == 0 and p1.returncode == 0, p0.stderr + p1.stderr
    s = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert s["processes"] == 2 and s["mesh"] == {"data": 2, "model": 2} and len(s["devices"]) == 4
    assert s["shard_shapes"]["params"] == [256, 512] and s["step"] == end
    sample = s["sample"].split()
    assert len(sample) == 21 and all(0 <= int(t) < 512 for t in sample)
    # the same run in one process on one device
    _, rows1, _ = train(tmp_path / "single", *args[:-2], "--max-iters", str(end))
    rows = [json.loads(x) for x in (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == end and len(rows) >= 3
    by_step = {r["step"]: r for r in rows1}
    assert_same_losses(rows, [by_step[r["step"]] for r in rows], 1e-5)


@pytest.mark.parametrize("pid", [0, 1])
def test_an_unreachable_coordinator_is_named_at_once_and_ends_in_one_line(tmp_path, pid):
    """The process gives up after its --distributed-timeout of 3 s (JAX's own, 300 s, would run past the hang
    guard); coordinator addresses refused before anything is joined are refused in this process."""
    r = run_script("train.py", "--distributed", "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2",
                   "--process-id", str(pid), "--distributed-timeout", "3", "--out-dir", str(tmp_path / "o"),
                   timeout=150)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 2 and "Traceback" not in r.stderr, r.stderr
    assert "is joining the coordinator at 127.0.0.1" in lines[0] and "could not join" in lines[1]
    for bad, msg in (("localhost", "HOST:PORT"), ("no.such.host.invalid:1234", "cannot resolve")):
        one_line(run_cli("train.py", "--distributed", "--coordinator", bad, "--out-dir", str(tmp_path)), 2, msg)
