"""Config files (bigram_jax/cli/config_file.py): TOML and JSON read, flags on top, bad files one line."""
from __future__ import annotations

import json

from bigram_jax.cli.train import train_main
from tests.cli.conftest import _bad


def test_config_file_and_flag_precedence(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('max_iters = 20\neval_interval = 10\nbatch_size = 4\nsample_tokens = 0\nloss = "gather"\n')
    assert train_main(["--config", str(toml), "--batch-size", "8", "--out-dir", str(tmp_path / "o")]) == 0
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert cfg["batch_size"] == 8 and cfg["max_iters"] == 20 and cfg["loss"] == "gather"
    assert "step 20:" in capsys.readouterr().out


def test_bad_config_files(tmp_path, capsys):
    (tmp_path / "u.json").write_text('{"batch_size": 4, "n_layer": 12}')
    assert "unknown config key(s): n_layer" in _bad(tmp_path, capsys, "--config", str(tmp_path / "u.json"))
    (tmp_path / "b.toml").write_text("max_iters = [")
    assert "not valid TOML" in _bad(tmp_path, capsys, "--config", str(tmp_path / "b.toml"))
    assert "config file not found" in _bad(tmp_path, capsys, "--config", str(tmp_path / "none.json"))


def test_a_config_nested_deep_is_one_line(tmp_path, capsys):
    """Issue 28 item 8: a JSON or TOML config nested 100,000 deep made the parser raise RecursionError (a
    traceback); one nested a little (parsed, but no setting is) is refused too, before anything formats it."""
    (tmp_path / "deep.json").write_text('{"max_iters": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "nests values too deep" in _bad(tmp_path, capsys, "--config", str(tmp_path / "deep.json"))
    (tmp_path / "deep.toml").write_text("max_iters = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "nests values too deep" in _bad(tmp_path, capsys, "--config", str(tmp_path / "deep.toml"))
    (tmp_path / "some.json").write_text('{"max_iters": ' + "[" * 500 + "]" * 500 + "}")
    assert "nests values more than 4 deep" in _bad(tmp_path, capsys, "--config", str(tmp_path / "some.json"))


def test_a_config_file_too_large_or_special_is_one_line(tmp_path, capsys):
    """The config file goes through the one checked open: a folder, or a file over 1 MB, is one line."""
    assert "not a regular file" in _bad(tmp_path, capsys, "--config", str(tmp_path))
    (tmp_path / "big.json").write_text('{"max_iters": 20' + " " * (1 << 20) + "}")
    assert "over the 1 MB" in _bad(tmp_path, capsys, "--config", str(tmp_path / "big.json"))
