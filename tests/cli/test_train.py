"""scripts/train.py (bigram_jax/cli/train.py): the lecture's run end to end, bad input as one line."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.cli.conftest import _bad
from tests.conftest import loss_rows as _rows
from tests.conftest import ok, run_cli, run_script, train


@pytest.mark.e2e
def test_lecture_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = run_script("train.py", "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("step ")]
    assert [int(ln.split()[1].rstrip(":")) for ln in lines] == list(range(0, 3001, 300))
    assert all(", val loss " in ln and ": train loss " in ln for ln in lines)
    assert "backend: cpu" in r.stdout and "Traceback" not in r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["step"] == 3000 and s["val_loss"] <= 2.50 and s["floor_val_loss"] < s["val_loss"]
    assert s["floor_train_loss"] < s["train_loss"] < s["val_loss"]
    assert s["tokens_per_second"] > 0 and s["wall_seconds"] > 0 and s["backend"] == "cpu" and s["devices"]
    assert len(s["sample"]) == 501 and s["sample"][1:] in r.stdout  # 500 new characters after '\n'
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(0, 3001, 300))
    assert rows[-1]["val_loss"] == s["val_loss"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["batch_size"] == 32 and cfg["block_size"] == 8 and cfg["learning_rate"] == 0.01 and cfg["seed"] == 1337


@pytest.mark.parametrize("argv,msg", [
    (["--batch-size", "0"], "batch_size must be positive"),
    (["--block-size", "-3"], "block_size must be positive"),
    (["--max-iters", "-1"], "max_iters must be >= 0"),
    (["--eval-interval", "0"], "eval_interval must be positive"),
    (["--learning-rate", "nan"], "learning_rate must be a finite number"),
    (["--learning-rate", "inf"], "learning_rate must be a finite number"),
    (["--learning-rate=-1e-2"], "learning_rate must be >= 0"),
    (["--batch-size", "3.5"], "batch_size must be an int"),
    (["--loss", "magic"], "loss must be one of auto, counts, gather"),
    (["--model-parallel", "-1"], "model_parallel must be >= 0"),
    (["--vocab-size", "-5"], "vocab_size must be >= 0"),
    (["--vocab-size", "100"], "vocab_size applies to token-id data"),
    (["--val-data", "val.txt"], "val_data must be a token-id file (.bin or .npy)"),
    (["--coordinator", "127.0.0.1:1234"], "--coordinator, --num-processes and --process-id need --distributed"),
    (["--distributed", "--num-processes", "0"], "--num-processes must be >= 1"),
    (["--distributed", "--plot"], "--plot does not combine with --distributed"),
    (["--distributed", "--num-processes", "2", "--process-id", "2"], "--process-id must be in [0, --num-processes)"),
    (["--temperature", "0"], "temperature must be positive"),
    (["--bogus", "1"], "unrecognized arguments: --bogus"),
    (["--allow-mismatch"], "only makes sense with --resume"),
])
def test_bad_flags(tmp_path, capsys, argv, msg):
    assert msg in _bad(tmp_path, capsys, *argv)
    assert not (tmp_path / "out").exists()  # nothing written for a rejected run


def test_bad_data_files(tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)))
    (tmp_path / "short.txt").write_text("abcdefgh")
    assert "data file not found" in _bad(tmp_path, capsys, "--data", str(tmp_path / "nope.txt"))
    assert "data file is empty" in _bad(tmp_path, capsys, "--data", str(tmp_path / "empty.txt"))
    assert "not UTF-8" in _bad(tmp_path, capsys, "--data", str(tmp_path / "bin.dat"))
    assert "corpus too short" in _bad(tmp_path, capsys, "--data", str(tmp_path / "short.txt"))


@pytest.mark.e2e
def test_bad_input_in_a_real_process(tmp_path):
    for argv in (["--data", str(tmp_path / "missing.txt")], ["--learning-rate", "nan"], ["--nope"]):
        r = run_script("train.py", *argv, "--out-dir", str(tmp_path / "o"))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("train.py: error: ") and "Traceback" not in r.stderr


@pytest.mark.usefixtures("own_cache")
def test_nanogpt_flag_spelling_is_accepted(tmp_path):
    out = tmp_path / "out"
    r = run_cli("train.py", "--batch_size=64", "--learning_rate=1e-3", "--max_iters=20", "--sample_tokens=0",
                "--eval_interval=10", "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["batch_size"], cfg["learning_rate"], cfg["max_iters"], cfg["sample_tokens"]) == (64, 0.001, 20, 0)
    assert sorted(_rows(out)) == [0, 10, 20]


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
def test_a_damaged_xla_cache_is_passed_over_quietly(tmp_path, own_cache):
    """Issue 20, case 14d: every file of JAX's compilation cache overwritten with garbage and the program cache
    deleted: the rerun succeeds with no "Warning" on stderr. (The run's own programs bypass JAX's cache; the host
    feed's batch offsets, compiled by plain jit, go through it.)"""
    args = ["--max-iters", "50", "--eval-interval", "50", "--sample-tokens", "20", "--data-on", "host"]
    ok(train(tmp_path / "warm", *args))
    files = [p for p in (own_cache / "bigram_jax" / "xla").rglob("*") if p.is_file()]
    assert files
    for p in files:
        p.write_bytes(os.urandom(max(64, p.stat().st_size // 2)))
    shutil.rmtree(own_cache / "bigram_jax" / "programs")
    r = ok(train(tmp_path / "again", *args))
    assert "Warning" not in r.stderr, r.stderr[-3000:]


@pytest.mark.e2e
def test_warnings_as_errors_stop_nothing(tmp_path):
    """`python -W error::DeprecationWarning -W error::ResourceWarning scripts/train.py`: orbax 0.12's use of a name
    that jax 0.12 deprecates is filtered around importing orbax alone, and every file the run opens is closed."""
    import subprocess
    import sys

    from tests.conftest import ROOT, env_of

    r = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-W", "error::ResourceWarning",
                        str(ROOT / "scripts" / "train.py"), "--max-iters", "20", "--eval-interval", "10",
                        "--sample-tokens", "5", "--out-dir", str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=300, env=env_of(XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert r.returncode == 0 and "step 20:" in r.stdout, r.stderr[-2000:]
