"""Checkpoints: round trip, retention, bit-exact resume, SIGKILL and SIGTERM, sampling, damaged input."""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigram_jax.checkpoint import manager as ckpt
from bigram_jax import load_checkpoint
from bigram_jax.config import Config
from bigram_jax.errors import UserError
from bigram_jax.model import table_of
from bigram_jax.train import init_state, train_steps
from tests.conftest import ROOT, popen_script, run_script

FAST = ["--sample-tokens", "0", "--batch-size", "16", "--block-size", "16"]


def _leaves(state) -> list[np.ndarray]:
    """Every leaf as numpy, typed keys as their raw data, for bit comparisons."""
    f = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    return [np.asarray(f(x)) for x in jax.tree.leaves(state)]


def _final_state(out: Path, step: int | None = None):
    """The full train state of a run's checkpoint, restored through the library."""
    with ckpt.Checkpoints(ckpt.checkpoint_dir(out), read_only=True) as ckpts:
        step = ckpts.pick(step)
        meta = ckpts.read_meta(step)
        cfg = Config(**meta["config"])
        abstract = jax.eval_shape(lambda: init_state(cfg, meta["vocab_size"]))
        return ckpts.restore_state(step, abstract, meta), meta


def _assert_same(a: Path, b: Path) -> None:
    """Two runs ended in bit-identical states and logged identical exact losses."""
    (sa, _), (sb, _) = _final_state(a), _final_state(b)
    assert int(sa.step) == int(sb.step)
    for x, y in zip(_leaves(sa), _leaves(sb), strict=True):
        np.testing.assert_array_equal(x, y)
    rows = lambda d: {r["step"]: (r["train_loss"], r["val_loss"])  # noqa: E731
                      for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())}
    ra, rb = rows(a), rows(b)
    assert ra == rb and max(ra) == int(sa.step)


def _digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


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


def test_resume_is_bit_identical(tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    assert run_script("train.py", "--max-iters", "600", "--out-dir", str(full), *FAST).returncode == 0
    assert run_script("train.py", "--max-iters", "300", "--out-dir", str(half), *FAST).returncode == 0
    r = run_script("train.py", "--resume", "--max-iters", "600", "--out-dir", str(half), "--sample-tokens", "0")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "step 300:" not in r.stdout and "step 600:" in r.stdout
    _assert_same(full, half)
    meta = _final_state(half)[1]
    assert meta["data_sha256"].startswith("86c4e6aa") and meta["vocab"][:2] == "\n " and "jax" in meta["versions"]
    # a fresh run into a directory with checkpoints is refused and changes nothing
    before = _digest(half)
    r = run_script("train.py", "--out-dir", str(half))
    assert r.returncode == 2 and "--resume" in r.stderr and _digest(half) == before


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["--eval-interval", "500", "--checkpoint-every", "500", "--chunk-seconds", "0.05", "--batch-size", "64",
            "--block-size", "64", "--sample-tokens", "0"]
    p = popen_script("train.py", "--max-iters", "1000000", "--out-dir", str(killed), *args)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list((killed / "checkpoints").glob("[0-9]*"))) < 3:
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    assert p.returncode == -signal.SIGKILL
    # an unfinished save (as a kill mid-write leaves it) is ignored, not loaded
    junk = killed / "checkpoints" / "99999999.orbax-checkpoint-tmp-1"
    junk.mkdir()
    (junk / "garbage").write_bytes(b"\x00" * 10)
    last = max(int(d.name) for d in (killed / "checkpoints").iterdir() if d.name.isdigit())
    target = str(last + 1000)
    r = run_script("train.py", "--resume", "--max-iters", target, "--out-dir", str(killed))
    assert r.returncode == 0, r.stderr
    assert run_script("train.py", "--max-iters", target, "--out-dir", str(clean), *args).returncode == 0
    _assert_same(killed, clean)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_resume_continues(tmp_path, sig):
    stopped, clean = tmp_path / "stopped", tmp_path / "clean"
    args = ["--eval-interval", "1000", "--chunk-seconds", "0.05", "--sample-tokens", "0"]
    p = popen_script("train.py", "--max-iters", "1000000", "--out-dir", str(stopped), *args)
    for line in p.stdout:
        if line.startswith("step 1000:"):
            break
    p.send_signal(sig)
    t = time.time()
    out, err = p.communicate(timeout=60)
    assert time.time() - t < 5, "the signal must be honoured within a chunk or two"
    assert p.returncode == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "--resume" in err and "Traceback" not in err
    step = int(err.split(" at step ")[1].split(";")[0])
    assert step >= 1000 and step in [int(d.name) for d in (stopped / "checkpoints").iterdir() if d.name.isdigit()]
    target = str((step // 1000 + 1) * 1000)
    r = run_script("train.py", "--resume", "--max-iters", target, "--out-dir", str(stopped))
    assert r.returncode == 0, r.stderr
    assert run_script("train.py", "--max-iters", target, "--out-dir", str(clean), *args).returncode == 0
    _assert_same(stopped, clean)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    r = run_script("train.py", "--max-iters", "600", "--checkpoint-every", "300", "--out-dir", str(out),
                   "--sample-tokens", "0")
    assert r.returncode == 0, r.stderr
    return out


def test_sample_from_checkpoint(trained, tmp_path):
    a = run_script("sample.py", "--checkpoint", str(trained), "--prompt", "ROMEO:", "--num-tokens", "200",
                   "--num-samples", "2", "--seed", "5")
    b = run_script("sample.py", "--checkpoint", str(trained / "checkpoints"), "--prompt", "ROMEO:",
                   "--num-tokens", "200", "--num-samples", "2", "--seed", "5")
    c = run_script("sample.py", "--checkpoint", str(trained), "--prompt", "ROMEO:", "--num-tokens", "200",
                   "--num-samples", "2", "--seed", "6")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout != c.stdout
    assert a.stdout.count("ROMEO:") >= 2 and "step 600" in a.stderr and "step" not in a.stdout  # notes on stderr
    (tmp_path / "p.txt").write_text("JULIET:")
    d = run_script("sample.py", "--checkpoint", str(trained), "--step", "300", "--prompt-file", str(tmp_path / "p.txt"),
                   "--num-tokens", "50", "--top-k", "3", "--temperature", "0.8", "--sampler", "cdf")
    assert d.returncode == 0 and d.stdout.startswith("JULIET:") and len(d.stdout.rstrip("\n")) >= 57


@pytest.mark.parametrize("argv,msg", [
    (["--prompt", "héllo€"], "2 character(s) not in the vocabulary: 'é', '€'"),
    (["--prompt", ""], "prompt is empty"),
    (["--step", "12345"], "no checkpoint at step 12345"),
    (["--top-k", "0"], "top_k must be an integer in 1..65"),
    (["--temperature", "0"], "temperature must be a positive"),
    (["--num-tokens", "-5"], "--num-tokens must be >= 0"),
    (["--prompt-file", "/nonexistent/p.txt"], "cannot read prompt file"),
])
def test_sample_bad_input(trained, argv, msg):
    r = run_script("sample.py", "--checkpoint", str(trained), *argv)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_damaged_checkpoints_are_one_line_errors(trained, tmp_path):
    for d in ("missing", "empty"):
        if d == "empty":
            (tmp_path / d).mkdir()
        r = run_script("sample.py", "--checkpoint", str(tmp_path / d))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    latest = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    for f in (run / "checkpoints" / str(latest) / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "manifest" not in f.name and "METADATA" not in f.name:
            f.write_bytes(b"\x13" * f.stat().st_size)  # corrupt the array data
    (run / "checkpoints" / str(latest) / "meta" / "metadata").write_text("{not json")
    before = _digest(run / "checkpoints")
    for script, argv in (("sample.py", ["--checkpoint", str(run)]), ("train.py", ["--resume", "--out-dir", str(run)])):
        r = run_script(script, *argv)
        assert r.returncode == 2 and "unreadable" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert _digest(run / "checkpoints") == before  # nothing else touched
    ok = run_script("sample.py", "--checkpoint", str(run), "--step", str(latest - 300), "--num-tokens", "10")
    assert ok.returncode == 0, ok.stderr  # the older checkpoints still load
    with pytest.raises(UserError, match="unreadable"):
        load_checkpoint(run)


def test_resume_refuses_other_data(trained, tmp_path, shakespeare_text):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = _digest(run)
    other = tmp_path / "other.txt"
    other.write_text(shakespeare_text[::-1])  # same 65 characters, another file
    args = ["--resume", "--out-dir", str(run), "--data", str(other), "--max-iters", "900"]
    r = run_script("train.py", *args)
    assert r.returncode == 2 and "data file differs" in r.stderr and "--allow-mismatch" in r.stderr
    assert _digest(run) == before
    small = tmp_path / "small.txt"
    small.write_text("hello world, " * 100)
    r = run_script("train.py", "--resume", "--out-dir", str(run), "--data", str(small), "--allow-mismatch")
    assert r.returncode == 2 and "cannot be resumed" in r.stderr and _digest(run) == before
    r = run_script("train.py", *args, "--allow-mismatch")
    assert r.returncode == 0 and "step 900:" in r.stdout, r.stderr



V010_RUN, TINY = ROOT / "tests" / "fixtures" / "v010_run", ROOT / "tests" / "fixtures" / "tiny.txt"


def test_a_run_written_by_v010_loads_and_resumes_as_todays_run(tmp_path):
    """tests/fixtures/v010_run: 20 steps on tiny.txt written by bigram-jax 0.1.0, before the redesign."""
    ck = load_checkpoint(V010_RUN)
    assert ck.step == 20 and ck.vocab == "".join(sorted(set(TINY.read_text())))
    old = tmp_path / "old"
    shutil.copytree(V010_RUN, old)
    r = run_script("train.py", "--resume", "--out-dir", str(old), "--data", str(TINY), "--max-iters", "30",
                   "--sample-tokens", "0")
    assert r.returncode == 0 and "step 30:" in r.stdout, r.stderr
    fresh = tmp_path / "fresh"  # today's code from scratch: the same losses at 0, 10, 20 as 0.1.0 logged
    r = run_script("train.py", "--out-dir", str(fresh), "--data", str(TINY), "--max-iters", "30",
                   "--eval-interval", "10", "--keep-checkpoints", "1", "--sample-tokens", "0")
    assert r.returncode == 0, r.stderr
    _assert_same(old, fresh)


@pytest.mark.parametrize("fixture, data", [("f6817d1_run", "tiny.txt"), ("f6817d1_ids_run", "tiny.bin")])
def test_a_run_written_before_the_metadata_checksum_loads_and_resumes(tmp_path, fixture, data):
    """tests/fixtures/f6817d1_*: 20 steps on tiny.txt (text) and tiny.bin (its ids) written by commit f6817d1, the
    format before metadata checksums and tokenizer records: they load, sample and resume as today's runs."""
    source, data = ROOT / "tests" / "fixtures" / fixture, ROOT / "tests" / "fixtures" / data
    ck = load_checkpoint(source)
    assert ck.step == 20 and "meta_sha256" not in ck.meta
    r = run_script("sample.py", "--checkpoint", str(source), "--num-tokens", "10")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    old = tmp_path / "old"
    shutil.copytree(source, old)
    r = run_script("train.py", "--resume", "--out-dir", str(old), "--data", str(data), "--max-iters", "30",
                   "--sample-tokens", "0")
    assert r.returncode == 0 and "step 30:" in r.stdout, r.stderr
    fresh = tmp_path / "fresh"  # today's code from scratch: the same losses at 0, 10, 20, 30 and the same state
    r = run_script("train.py", "--out-dir", str(fresh), "--data", str(data), "--max-iters", "30",
                   "--eval-interval", "10", "--keep-checkpoints", "1", "--sample-tokens", "0")
    assert r.returncode == 0, r.stderr
    _assert_same(old, fresh)


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
