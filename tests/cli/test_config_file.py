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
    assert "cannot read config file" in _bad(tmp_path, capsys, "--config", str(tmp_path / "none.json"))
