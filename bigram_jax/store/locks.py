"""Locks on files, the OS's own (flock): a lock is released when its holder closes it or its process ends, however
it ends, so no lock outlives a killed run."""
from __future__ import annotations

from pathlib import Path
from typing import IO


def acquire(path: Path, wait: bool) -> IO | None:
    """The open, locked file at `path` (created if absent), or None when another holds it and `wait` is False.
    Close the file to release it. OSError where `path` cannot be a lock file (a folder, a dangling link)."""
    import fcntl  # POSIX

    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    return f
