"""The per-user cache: what a file's streaming pass learned (identity, id range, pair counts); compiled programs
are kept beside it by bigram_jax.programs.

An entry is stored under the file's absolute path and trusted only while the file keeps the size and modification
time it had, and only if the entry's own checksum holds: a damaged or stale entry is rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir() -> Path:
    """Per-user cache folder (XDG_CACHE_HOME honoured)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bigram_jax"


def _entry(tf: Any, name: str) -> tuple[Path, str]:
    """(where the entry lives, the key it must carry) for a TokenFile's entry `name`."""
    where = Path(tf.path).resolve()
    folder = cache_dir() / "tokens" / hashlib.sha1(str(where).encode()).hexdigest()[:20]
    return folder / f"{name}.npz", f"{where}|{tf.size}|{tf.mtime_ns}"


def text_entry(path: Path, st: os.stat_result) -> Path:
    """The folder of a large text file's encoded tokens: a new one whenever the file's size or mtime change."""
    key = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return cache_dir() / "text" / hashlib.sha1(key.encode()).hexdigest()[:20]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the entry's names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load(tf: Any, name: str) -> dict[str, np.ndarray] | None:
    """The arrays of a valid entry, or None (absent, stale, or damaged: the caller recomputes and stores)."""
    path, key = _entry(tf, name)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return None
    key_, checksum = arrays.pop("_key", None), arrays.pop("_checksum", None)
    if key_ is None or str(key_) != key or checksum is None or str(checksum) != _checksum(arrays):
        return None
    return arrays


def store(tf: Any, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Write an entry atomically; a cache that cannot be written (read-only home, full disk) is skipped."""
    path, key = _entry(tf, name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            np.savez(f, _key=np.array(key), _checksum=np.array(_checksum(arrays)), **arrays)
        os.replace(f.name, path)
    except OSError:
        try:
            os.unlink(f.name)
        except (OSError, NameError, UnboundLocalError):
            pass
