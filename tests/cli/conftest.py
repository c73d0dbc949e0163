"""What the tests of the commands share: an in-process train_main that must fail in one line."""
from __future__ import annotations

from bigram_jax.cli.train import train_main


def _bad(tmp_path, capsys, *argv: str) -> str:
    """Run train_main in-process; assert it fails with one line on stderr; return it."""
    rc = train_main([*argv, "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err
