"""A run's settings from a JSON or TOML file (its keys and values are checked by config.make_config)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomllib

from bigram_jax.errors import UserError
from bigram_jax.store.files import check_regular


def load_config_file(path: str) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict (keys checked later)."""
    p = Path(path)
    if p.exists():
        check_regular(p, "config file")  # a FIFO would block
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        if p.suffix == ".toml":
            d = tomllib.loads(raw.decode("utf-8"))
        else:
            d = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {e}") from None
    if not isinstance(d, dict):
        raise UserError(f"config file {path} must hold a table/object of settings")
    return d
