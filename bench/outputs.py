"""The files the bench and the device check write: checked before any section or part runs (a refusal after a
lent GPU's whole budget is the budget lost), and written without following a link.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bigram_jax.errors import UserError


def _nearest_folder(path: Path, flag: str) -> Path:
    """The nearest existing ancestor of `path`, which must be a folder this process can create files in."""
    parent = path.absolute().parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is not a folder")
    try:  # the one sure test of writability (os.access says yes to root on a read-only file system)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write in {parent} ({e.strerror or e})") from None
    return parent


def check_file(path: Path, flag: str) -> None:
    """A file about to be written (replaced if it is one): not a link, not a folder or other non-file, in a place
    this process can write (missing folders on the way are created when it is written)."""
    if path.is_symlink():
        raise UserError(f"{flag} {path} is a symbolic link: name the file itself")
    if path.exists() and not path.is_file():
        raise UserError(f"{flag} {path} exists and is not a regular file")
    _nearest_folder(path, flag)


def check_folder(path: Path, names: tuple[str, ...], flag: str) -> None:
    """A folder the files `names` are about to be written in (created if absent): not a link nor a file, writable,
    and none of those files a link or a folder."""
    if path.is_symlink():
        raise UserError(f"{flag} {path} is a symbolic link: name the folder itself")
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is not a folder")
    if not path.exists():
        _nearest_folder(path, flag)
        return
    _nearest_folder(path / names[0], flag)
    for name in names:
        check_file(path / name, flag)


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path`, creating its folders; a link put there since the check is refused, not followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
