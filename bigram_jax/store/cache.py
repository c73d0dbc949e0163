"""The per-user cache, and the one entry format every cache of bigram-jax uses (a file's streaming pass, a large
text's encoding, compiled programs).

An entry is one file: a magic line, the sha256 of the rest, a JSON header line, then the bytes of its arrays. The
header carries the entry's whole key (its kind and name, the identity of the file it was made from, the format),
so the checksum covers the key too: `read` returns an entry only if it is intact and its key is the one asked for.
An entry copied over another, or left from another version of its source file, is never used.

A source file's identity is its path, device, inode, size, mtime_ns and ctime_ns. `cp -p`, `rsync -t`, `tar` and
`touch -r` put back an mtime, but the kernel sets ctime on every change and nothing can set it back. What remains: a
file rewritten in place, and its mtime put back, within one tick of the kernel's file clock (a few milliseconds).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bigram_jax.errors import UserError
from bigram_jax.store.files import open_checked

FORMAT = 1  # of the entries: part of every key, so a future format never reads an old entry as its own
_MAGIC = b"bigram-jax cache entry\n"
_noted: list[str] = []  # the HOME note, said once per process


def cache_dir() -> Path:
    """The per-user cache folder: $XDG_CACHE_HOME/bigram_jax, else ~/.cache/bigram_jax."""
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "bigram_jax"
    where = Path.home() / ".cache" / "bigram_jax"  # with HOME unset, the password database's home
    if not os.environ.get("HOME") and not _noted:
        _noted.append(str(where))
        print(f"note: HOME is not set: caching in {where} (set XDG_CACHE_HOME to choose)", file=sys.stderr)
    return where


def stat_key(st: os.stat_result) -> list[int]:
    """The part of a file's identity its stat gives: device, inode, size, mtime_ns and ctime_ns."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def identity(path: Path, st: os.stat_result) -> dict[str, Any]:
    """What a cache entry knows its source file by (see the module's docstring); `st`: the file's stat."""
    return {"path": str(Path(path).resolve()), "stat": stat_key(st)}


def same_file(a: dict[str, Any], st: os.stat_result) -> bool:
    """Is `st` still the file whose identity is `a` (the path aside)?"""
    return a["stat"] == stat_key(st)


def source_folder(kind: str, path: Path) -> Path:
    """The folder of the entries made from one source file (by its absolute path)."""
    return cache_dir() / kind / hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:20]


def canonical(x: Any) -> bytes:
    """JSON of `x` with one spelling for equal values (sorted keys, no spaces): what a checksum is taken over."""
    return json.dumps(x, sort_keys=True, separators=(",", ":")).encode()


def write(path: Path, key: dict, arrays: dict[str, np.ndarray]) -> bool:
    """Store an entry atomically (a unique temporary name, then a rename); False where the cache cannot be
    written (a read-only home, a full disk): the caller goes on without it."""
    arrays = {k: np.asarray(a, order="C") for k, a in arrays.items()}  # (ascontiguousarray makes 0-d arrays 1-d)
    header = {"key": {**key, "format": FORMAT}, "arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()]}
    body = [canonical(header) + b"\n", *(a.tobytes() for a in arrays.values())]
    digest = hashlib.sha256()
    for part in body:
        digest.update(part)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
            tmp = f.name
            f.write(_MAGIC + digest.digest())
            for part in body:
                f.write(part)
        os.replace(tmp, path)
        return True
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False


def read(path: Path, key: dict) -> dict[str, np.ndarray] | None:
    """The arrays of the entry at `path` if it is intact and was stored under `key`; else None (absent,
    damaged, stale or another entry's: the caller computes it afresh and stores it)."""
    try:
        with open_checked(path, "cache entry") as f:  # a FIFO or device put in the cache is no entry: never waited on
            blob = memoryview(f.read())
    except (OSError, UserError):
        return None
    head = len(_MAGIC)
    if bytes(blob[:head]) != _MAGIC or hashlib.sha256(blob[head + 32:]).digest() != bytes(blob[head:head + 32]):
        return None
    body = blob[head + 32:]
    end = bytes(body[:1 << 20]).find(b"\n")
    if end < 0:
        return None
    try:
        header = json.loads(bytes(body[:end]))
        if canonical(header["key"]) != canonical({**key, "format": FORMAT}):
            return None
        out, at = {}, end + 1
        for name, dtype, shape in header["arrays"]:
            a = np.frombuffer(body, np.dtype(dtype), int(np.prod(shape)), at).reshape(shape)
            out[name], at = a, at + a.nbytes
    except (ValueError, KeyError, TypeError, RecursionError):  # (a header nested 100,000 deep: json recurses)
        return None
    return out
