"""Faults and bad input, round two (issue 14): each case a real process, real signals, real files."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax import load_checkpoint
from bigram_jax.errors import UserError
from bigram_jax.model import BigramLanguageModel, params_of
from bigram_jax.sampling import generate
from tests.conftest import ROOT, _shakespeare, popen_script, run_script

FAST = ["--sample-tokens", "0", "--eval-interval", "100"]


def one_line(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """The process failed with `code` and said so in one line holding `words`, with no traceback."""
    err = r.stderr.strip()
    assert r.returncode == code and len(err.splitlines()) == 1 and "Traceback" not in err, (r.returncode, err)
    assert all(w in err for w in words), err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished run with checkpoints at 100, 200 and 300."""
    out = tmp_path_factory.mktemp("faults") / "run"
    r = run_script("train.py", "--out-dir", str(out), "--max-iters", "300", "--checkpoint-every", "100", *FAST)
    assert r.returncode == 0, r.stderr
    return out


def _digest(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# 1. lost or corrupted runs ----------------------------------------------------------------------------------

def test_a_fresh_run_never_writes_into_a_folder_that_holds_a_run(tmp_path):
    mine = tmp_path / "x"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": 1}')
    one_line(run_script("train.py", "--out-dir", str(mine), "--max-iters", "50", *FAST), 2, "already holds a run",
             "--resume")
    assert (mine / "config.json").read_text() == '{"mine": 1}' and sorted(p.name for p in mine.iterdir()) == [
        "config.json"]
    sd = tmp_path / "t.pt"
    r = run_script("export_torch.py", "--checkpoint", str(ROOT / "tests" / "fixtures" / "v010_run"), "--out", str(sd))
    assert r.returncode == 0, r.stderr
    one_line(run_script("import_torch.py", "--state-dict", str(sd), "--data", str(ROOT / "tests" / "fixtures" /
                                                                                 "tiny.txt"), "--out-dir", str(mine)),
             2, "already holds a run")


def test_the_main_command_runs_twice_and_the_follow_ups_find_the_newest(tmp_path):
    for _ in range(2):
        r = run_script("train.py", "--max-iters", "100", *FAST, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    runs = tmp_path / "runs" / "bigram"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    assert json.loads((runs / "version_1" / "summary.json").read_text())["out_dir"].endswith("version_1")
    r = run_script("sample.py", "--num-tokens", "20", cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout) > 20, r.stderr
    r = run_script("train.py", "--resume", "--max-iters", "200", *FAST, cwd=tmp_path)
    assert r.returncode == 0 and "step 200:" in r.stdout and "version_1" in r.stdout, r.stderr
    assert (runs / "version_1" / "checkpoints" / "200").is_dir() and not (runs / "version_0" / "checkpoints" /
                                                                             "200").exists()


def _flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at % len(raw)] ^= 0x10
    path.write_bytes(bytes(raw))


def test_any_flipped_bit_in_the_arrays_is_found_on_load_and_resume(run, tmp_path):
    from bigram_jax.checkpoint.manager import Checkpoints
    from bigram_jax.config import Config
    from bigram_jax.train import init_state

    def state_of(d: Path) -> list[np.ndarray]:
        with Checkpoints(d / "checkpoints", read_only=True) as c:
            st = c.restore_state(300, abstract, c.read_meta(300))
        return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
                for x in jax.tree.leaves(st)]

    with Checkpoints(run / "checkpoints", read_only=True) as c:
        abstract = jax.eval_shape(lambda: init_state(Config(**c.read_meta(300)["config"]), 65))
    intact, intact_state, refused = load_checkpoint(run).params, state_of(run), 0
    data = sorted(p for p in (run / "checkpoints" / "300" / "state").rglob("*") if p.parent.name == "d")
    assert len(data) > 1
    for k, f in enumerate(data):
        for at in (7, f.stat().st_size // 2, f.stat().st_size - 3):
            damaged = tmp_path / f"d{k}_{at}"
            shutil.copytree(run, damaged)
            _flip(damaged / f.relative_to(run), at)
            try:  # the full state: refused, or (a flip in bytes no value depends on) exactly as saved
                for a, b in zip(state_of(damaged), intact_state, strict=True):
                    np.testing.assert_array_equal(a, b)
            except UserError as e:
                assert "step 300" in str(e) and ("damaged" in str(e) or "unreadable" in str(e))
                refused, caught = refused + 1, (f, at)
            try:  # the params alone: damaged ones are refused, the others load as they were saved
                got = load_checkpoint(damaged).params
                np.testing.assert_array_equal(got["params"]["token_embedding_table"]["embedding"],
                                              intact["params"]["token_embedding_table"]["embedding"])
            except UserError as e:
                assert "step 300" in str(e) and ("damaged" in str(e) or "unreadable" in str(e))
            shutil.rmtree(damaged)
    assert refused >= 3  # flips in the arrays themselves are caught (others hit bytes no value depends on)
    damaged = tmp_path / "resume"
    shutil.copytree(run, damaged)
    _flip(damaged / caught[0].relative_to(run), caught[1])  # a flip that full restores refuse
    one_line(run_script("train.py", "--resume", "--out-dir", str(damaged), "--max-iters", "400"), 2, "step 300",
             "step 200 is intact")


def test_two_runs_in_one_folder_at_once_are_refused_and_a_killed_run_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    p = popen_script("train.py", "--out-dir", str(out), "--max-iters", "100000000", "--checkpoint-every", "500",
                     "--chunk-seconds", "0.05", *FAST)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((out / "checkpoints").glob("[0-9]*")):
            time.sleep(0.1)
        one_line(run_script("train.py", "--resume", "--out-dir", str(out), "--max-iters", "10"), 2, "in use by another run")
        one_line(run_script("sample.py", "--checkpoint", str(out), "--num-tokens", "5", "--step", "0"), 2, "step 0")
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    last = max(int(d.name) for d in (out / "checkpoints").iterdir() if d.name.isdigit())
    r = run_script("train.py", "--resume", "--out-dir", str(out), "--max-iters", str(last + 100))
    assert r.returncode == 0, r.stderr


# 2. hangs ---------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("pid", [0, 1])
def test_an_unreachable_coordinator_is_named_at_once_and_ends_in_one_line(tmp_path, pid):
    t = time.time()
    r = run_script("train.py", "--distributed", "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2",
                   "--process-id", str(pid), "--distributed-timeout", "3", "--out-dir", str(tmp_path / "o"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 2 and "Traceback" not in r.stderr, r.stderr
    assert "is joining the coordinator at 127.0.0.1" in lines[0] and "could not join" in lines[1]
    assert time.time() - t < 30
    for bad, msg in (("localhost", "HOST:PORT"), ("no.such.host.invalid:1234", "cannot resolve")):
        one_line(run_script("train.py", "--distributed", "--coordinator", bad, "--out-dir", str(tmp_path)), 2, msg)


def _stopped_within(p: subprocess.Popen, sig: int, seconds: float) -> str:
    """Send `sig`; the process must end within `seconds` with 128 + sig and one line; its stderr."""
    p.send_signal(sig)
    t = time.time()
    _, err = p.communicate(timeout=60)
    assert time.time() - t < seconds and p.returncode == 128 + sig, (time.time() - t, p.returncode, err)
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name}" in err
    return err


def test_signals_are_honoured_in_the_closing_sample_and_in_sample_py(tmp_path, run):
    p = popen_script("train.py", "--out-dir", str(tmp_path / "s"), "--max-iters", "100", "--eval-interval", "100",
                     "--sample-tokens", "300000000")
    for line in p.stdout:
        if line.startswith("step 100:"):
            break
    time.sleep(1.0)  # into the sample of 300M characters
    _stopped_within(p, signal.SIGTERM, 2.0)
    assert (tmp_path / "s" / "checkpoints" / "100").is_dir()  # the checkpoint was safe before the sample
    p = popen_script("sample.py", "--checkpoint", str(run), "--num-tokens", "300000000")
    time.sleep(4.0)
    _stopped_within(p, signal.SIGINT, 2.0)


def test_a_stop_during_start_up_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()), "JAX_PLATFORMS": "cpu"}
    for sig in (signal.SIGTERM, signal.SIGINT):
        p = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), "--out-dir", str(tmp_path / "o")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(0.35)  # the handlers are in place after ~0.05 s; JAX is still importing
        _stopped_within(p, sig, 2.0)


def test_special_files_are_refused(tmp_path, run):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for argv in (["--data", str(fifo)], ["--data", "/dev/zero"], ["--config", str(fifo)]):
        one_line(run_script("train.py", *argv, "--out-dir", str(tmp_path / "o"), timeout=30), 2, "not a regular file")
    one_line(run_script("sample.py", "--checkpoint", str(run), "--prompt-file", str(fifo), timeout=30), 2,
             "not a regular file")


# 3. tracebacks ----------------------------------------------------------------------------------------------

def test_a_damaged_metrics_file_leaves_the_intact_steps_reachable(run, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(run, d)
    (d / "checkpoints" / "100" / "metrics" / "metrics").write_text("{broken")
    assert run_script("sample.py", "--checkpoint", str(d), "--num-tokens", "5").returncode == 0
    assert load_checkpoint(d).step == 300
    r = run_script("train.py", "--resume", "--out-dir", str(d), "--max-iters", "400")
    assert r.returncode == 0 and "step 400:" in r.stdout, r.stderr
    r = run_script("plot.py", "--run", str(d), "--out", str(tmp_path / "png"))
    assert r.returncode == 0, r.stderr


def test_file_system_errors_are_one_line(tmp_path, run):
    (tmp_path / "afile").write_text("x")
    one_line(run_script("train.py", "--out-dir", str(tmp_path / "afile"), *FAST), 2, "is a file")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "checkpoints").write_text("x")
    one_line(run_script("train.py", "--out-dir", str(tmp_path / "o"), *FAST), 2, "already holds a run")
    one_line(run_script("plot.py", "--run", str(run), "--out", str(tmp_path / "afile")), 2, "is a file")


def test_a_full_disk_stops_the_run_with_the_last_good_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("no tmpfs can be mounted here (needs root and a mount namespace): the full-disk case is untested")
    try:
        r = run_script("train.py", "--out-dir", str(disk / "run"), "--max-iters", "100000", "--checkpoint-every",
                       "100", *FAST)
        one_line(r, 2, "cannot save")
        steps = sorted(int(p.name) for p in (disk / "run" / "checkpoints").iterdir() if p.name.isdigit())
        assert steps and load_checkpoint(disk / "run").step == steps[-1]  # the last good one loads
    finally:
        subprocess.run(["umount", str(disk)])


def test_sizes_are_checked_at_start_against_the_memory_there_is(tmp_path, run):
    (tmp_path / "big.json").write_text('{"max_iters": 1e100}')
    (tmp_path / "str.json").write_text('{"batch_size": "32"}')
    for argv, msg in ((["--batch-size", str(10**9)], "GiB are available"), (["--sample-tokens", str(10**10)], "2**31"),
                      (["--config", str(tmp_path / "big.json")], "max_iters"),
                      (["--config", str(tmp_path / "str.json")], "batch_size must be an int")):
        one_line(run_script("train.py", *argv, "--out-dir", str(tmp_path / "o")), 2, msg)
    assert not (tmp_path / "o").exists()
    for argv, msg in ((["--num-tokens", str(10**10)], "2**31"), (["--num-samples", str(10**9)], "GiB are available")):
        one_line(run_script("sample.py", "--checkpoint", str(run), *argv), 2, msg)


def test_small_tracebacks_of_round_one(tmp_path, run):
    d = tmp_path / "run"
    shutil.copytree(run, d)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"step": 3')  # a killed run's half-written row
    r = run_script("train.py", "--resume", "--out-dir", str(d), "--max-iters", "400")
    assert r.returncode == 0, r.stderr
    assert all(json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines())
    import torch

    sparse = tmp_path / "sparse.pt"
    torch.save({"token_embedding_table.weight": torch.eye(65).to_sparse()}, sparse)
    one_line(run_script("import_torch.py", "--state-dict", str(sparse), "--out-dir", str(tmp_path / "i")), 2, "dense")
    nan = tmp_path / "nan.pt"
    torch.save({"token_embedding_table.weight": torch.full((65, 65), float("nan"))}, nan)
    one_line(run_script("import_torch.py", "--state-dict", str(nan), "--out-dir", str(tmp_path / "i")), 2, "NaN")
    (tmp_path / "one.txt").write_text("a")
    r = subprocess.run([sys.executable, "-m", "torch_ref.parity", "--data", str(tmp_path / "one.txt")], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    one_line(r, 2, "too short")


# 4. silent wrong answers ------------------------------------------------------------------------------------

def test_invalid_optimizer_settings_are_refused_and_a_non_finite_loss_stops_the_run(tmp_path):
    for argv, msg in ((["--eps", "0"], "eps must be positive"), (["--beta2", "0.99999999"], "rounds to 1.0"),
                      (["--weight-decay", "1e10"], "below 1")):
        one_line(run_script("train.py", *argv, "--out-dir", str(tmp_path / "o")), 2, msg)
    out = tmp_path / "nan"
    r = run_script("train.py", "--out-dir", str(out), "--learning-rate", "1e38", "--weight-decay", "0", "--max-iters", "600",
                   "--checkpoint-every", "100", *FAST)
    one_line(r, 3, "non-finite")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]  # valid JSON: no bare NaN
    assert all(np.isfinite(row["train_loss"]) for row in rows)
    for step in (int(p.name) for p in (out / "checkpoints").glob("[0-9]*")):
        assert np.isfinite(np.asarray(load_checkpoint(out, step).params["params"]["token_embedding_table"][
            "embedding"])).all()


def test_any_positive_temperature_samples_its_distribution_down_to_greedy():
    params = BigramLanguageModel(40).init(jax.random.key(3), jnp.zeros((1, 1), jnp.int32))
    idx = np.arange(40, dtype=np.int32)[:, None]
    greedy = np.asarray(generate(params, jax.random.key(1), idx, 30, top_k=1))
    for t in (1e-40, 1e-45, 1e-30):
        for sampler in ("categorical", "cdf"):
            out = np.asarray(generate(params, jax.random.key(1), idx, 30, temperature=t, sampler=sampler))
            np.testing.assert_array_equal(out, greedy)


def test_the_python_api_checks_what_it_can(tmp_path):
    model = BigramLanguageModel(7)
    params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    for x, y in (([[7]], None), ([[-1]], None), ([[1]], [[7]])):
        with pytest.raises(UserError, match=r"in \[0, 7\)"):
            model.apply(params, jnp.array(x), None if y is None else jnp.array(y))
    table = params["params"]["token_embedding_table"]["embedding"]
    with pytest.raises(UserError, match="NaN"):
        generate(params_of(table.at[2, 3].set(jnp.nan)), jax.random.key(0), np.zeros((1, 1), np.int32), 5)
    with pytest.raises(UserError, match="square"):
        generate(params_of(table[:, :5]), jax.random.key(0), np.zeros((1, 1), np.int32), 5)
    out = generate(params, jax.random.key(0), np.zeros((2, 1), np.int32), np.int64(5), temperature=np.float32(0.5),
                   top_k=jnp.int32(3))
    assert out.shape == (2, 6)
    with pytest.raises(UserError, match="step must be an integer"):
        load_checkpoint(ROOT / "tests" / "fixtures" / "v010_run", step="20")


def test_smaller_cases(tmp_path, run):
    one_line(run_script("train.py", "--top-k", "100", "--out-dir", str(tmp_path / "o")), 2, "more than the vocabulary")
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "config.json").write_text("{}")
    one_line(run_script("train.py", "--resume", "--out-dir", str(tmp_path / "killed")), 2, "holds no checkpoint",
             "start fresh")
    d = tmp_path / "run"
    shutil.copytree(run, d)
    one_line(run_script("train.py", "--resume", "--out-dir", str(d), "--max-iters", "200"), 2, "past --max-iters")
