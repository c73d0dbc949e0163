"""Input files: the one check before any read (a FIFO or a device would block or read forever), and the one
checked open every small input goes through (regular file, size limit, errors as one line)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

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


def _size_text(n: int) -> str:
    """A size in words: whole MiB when it is one, else bytes (a file 1 byte over 256 MB is not '256 MB')."""
    return f"{n >> 20} MB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n:,} bytes"


def open_checked(path: Path | str, what: str, limit: int | None = None) -> BinaryIO:
    """`path` opened for reading in binary, checked on the open file itself (so a file swapped between a check and
    the open is checked too): a regular file of at most `limit` bytes (None: any size). A missing file, a folder,
    a FIFO, a device, an unreadable or too large file is a UserError, one line naming `what` and the path."""
    path = Path(path)
    try:  # O_NONBLOCK: opening a FIFO with no writer returns at once (then refused), where it would block
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {path} is not a regular file")
        if limit is not None and st.st_size > limit:
            raise UserError(f"{what} {path} is {_size_text(st.st_size)}, over the {_size_text(limit)} such a "
                            "file can be")
        os.set_blocking(fd, True)  # (a regular file never blocks; reads behave as a plain open's)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_checked(path: Path | str, what: str, limit: int) -> bytes:
    """The bytes of `path`, through open_checked: at most `limit` bytes, even if the file grows while read."""
    with open_checked(path, what, limit) as f:
        try:
            raw = f.read(limit + 1)
        except OSError as e:
            raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(raw) > limit:
        raise UserError(f"{what} {path} grew past {_size_text(limit)} while it was read")
    return raw


def check_nesting(value: object, max_depth: int, what: str) -> None:
    """Refuse (UserError) plain data (dicts, lists, tuples) nested deeper than `max_depth`: a value a file builds
    without recursion (a pickle, a JSON parser) can be nested 100,000 deep, and every recursive use after (repr,
    ==, json.dumps) would overflow the stack. Walked without recursion, each container once (a pickle may share
    one, or hold a cycle)."""
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if not isinstance(v, (dict, list, tuple)) or id(v) in seen:
            continue
        if depth >= max_depth:
            raise UserError(f"{what} nests values more than {max_depth} deep")
        seen.add(id(v))
        items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
        stack.extend((x, depth + 1) for x in items)
