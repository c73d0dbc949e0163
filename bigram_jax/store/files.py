"""Input files: the one check before any read (a FIFO or a device would block or read forever)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from bigram_jax.errors import UserError


def check_regular(path: Path, what: str = "data file") -> os.stat_result:
    """The file's stat; a missing file, a folder, a FIFO or a device is a UserError (reading them would hang)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {path} is not a regular file")
    return st
