"""scripts/train.py end to end: the lecture's run, config files, and every bad input as one line."""
from __future__ import annotations

import json

import pytest

from bigram_jax.cli.train import train_main
from tests.conftest import run_script


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


def test_config_file_and_flag_precedence(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('max_iters = 20\neval_interval = 10\nbatch_size = 4\nsample_tokens = 0\nloss = "gather"\n')
    assert train_main(["--config", str(toml), "--batch-size", "8", "--out-dir", str(tmp_path / "o")]) == 0
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert cfg["batch_size"] == 8 and cfg["max_iters"] == 20 and cfg["loss"] == "gather"
    assert "step 20:" in capsys.readouterr().out


def _bad(tmp_path, capsys, *argv: str) -> str:
    """Run train_main in-process; assert it fails with one line on stderr; return it."""
    rc = train_main([*argv, "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


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


def test_bad_config_files(tmp_path, capsys):
    (tmp_path / "u.json").write_text('{"batch_size": 4, "n_layer": 12}')
    assert "unknown config key(s): n_layer" in _bad(tmp_path, capsys, "--config", str(tmp_path / "u.json"))
    (tmp_path / "b.toml").write_text("max_iters = [")
    assert "not valid TOML" in _bad(tmp_path, capsys, "--config", str(tmp_path / "b.toml"))
    assert "cannot read config file" in _bad(tmp_path, capsys, "--config", str(tmp_path / "none.json"))


def test_bad_data_files(tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)))
    (tmp_path / "short.txt").write_text("abcdefgh")
    assert "data file not found" in _bad(tmp_path, capsys, "--data", str(tmp_path / "nope.txt"))
    assert "data file is empty" in _bad(tmp_path, capsys, "--data", str(tmp_path / "empty.txt"))
    assert "not UTF-8" in _bad(tmp_path, capsys, "--data", str(tmp_path / "bin.dat"))
    assert "corpus too short" in _bad(tmp_path, capsys, "--data", str(tmp_path / "short.txt"))


def test_bad_input_in_a_real_process(tmp_path):
    for argv in (["--data", str(tmp_path / "missing.txt")], ["--learning-rate", "nan"], ["--nope"]):
        r = run_script("train.py", *argv, "--out-dir", str(tmp_path / "o"))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("train.py: error: ") and "Traceback" not in r.stderr


def test_console_commands_are_installed_beside_the_scripts():
    """pyproject's [project.scripts]: each command answers --help, and a bad flag is one line."""
    import shutil
    import subprocess
    import tomllib

    from tests.conftest import ROOT

    commands = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"bigram-jax-train", "bigram-jax-sample", "bigram-jax-plot"} <= set(commands)
    for name in commands:
        exe = shutil.which(name)
        if exe is None:
            pytest.skip(f"{name} is not installed here (pip install -e . installs it)")
        assert subprocess.run([exe, "--help"], capture_output=True, text=True).returncode == 0, name
        r = subprocess.run([exe, "--no-such-flag"], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
