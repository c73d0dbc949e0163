"""A run's settings from a JSON or TOML file (its keys and values are checked by config.make_config)."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from bigram_jax.errors import UserError
from bigram_jax.store.files import check_nesting, read_checked

CONFIG_MAX = 1 << 20  # bytes: a file of flat settings is a few hundred
CONFIG_DEPTH = 4  # containers: the settings are one flat table of scalars; a little room for a list


def load_config_file(path: str) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict (keys checked later)."""
    kind = "TOML" if Path(path).suffix == ".toml" else "JSON"
    raw = read_checked(Path(path), "config file", CONFIG_MAX)  # regular, bounded: a FIFO would block
    try:
        text = raw.decode("utf-8")
        d = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid {kind}: {str(e).splitlines()[0][:200]}") from None
    except RecursionError:  # both parsers recurse per nesting level: [[[[... 100,000 deep overflows them
        raise UserError(f"config file {path} nests values too deep to be settings") from None
    check_nesting(d, CONFIG_DEPTH, f"config file {path}")  # what parses may still be too deep to print or compare
    if not isinstance(d, dict):
        raise UserError(f"config file {path} must hold a table/object of settings")
    return d
