"""Token-id files of any size: memory-mapped (nanoGPT's way), never read whole, never converted whole.

A file is read in full only by `scan`, once, in CHUNK-sized pieces: its sha256 (the identity checkpoints record),
its smallest and largest id, and the transition counts of its splits. The scan is cached (cache.py) under the
file's identity (path, inode, size, mtime and ctime), so a second run, or a resume, reads none of it again.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import weakref
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bigram_jax.counts import PairCounter
from bigram_jax.errors import UserError
from bigram_jax.store import cache
from bigram_jax.store.files import open_checked

TOKEN_SUFFIXES = (".bin", ".npy")
CHUNK = 1 << 24  # tokens per read of a streaming pass: 32-128 MB of memory whatever the file's size


def dtype_for(max_id: int) -> str:
    """The flat token file's dtype for ids up to `max_id`: the largest id a tokenizer can emit, not its number of
    entries (a vocabulary's ids need not be 0..n-1)."""
    if max_id < 1 << 16:
        return "<u2"
    if max_id < 1 << 32:
        return "<u4"
    raise UserError(f"token ids up to {max_id} do not fit a uint32 token file")


def write_ids(f: BinaryIO, ids: np.ndarray, dtype: str, path: Path) -> None:
    """Append `ids` to the token file `f` (at `path`) as `dtype`, checked to fit: a cast never wraps an id. A full
    disk is said in words."""
    ids = np.asarray(ids)
    top = np.iinfo(np.dtype(dtype)).max
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > top):
        bad = int(ids.max()) if int(ids.max()) > top else int(ids.min())
        raise UserError(f"token id {bad} does not fit the {np.dtype(dtype).name} token file {path}")
    data = memoryview(ids.astype(dtype, copy=False).tobytes())
    try:
        while data:  # (an unbuffered file may take part of it)
            data = data[f.write(data):]
    except OSError as e:
        raise write_error(e, path) from None


def write_error(e: OSError, path: Path) -> UserError:
    """A failed write of a token file, in words."""
    if e.errno == errno.ENOSPC:
        return UserError(f"no space left on device writing {path}: free some space (or set XDG_CACHE_HOME to "
                         "another disk) and run again")
    return UserError(f"cannot write {path} ({e.strerror or e})")


@dataclasses.dataclass(frozen=True)
class TokenFile:
    """A memory-mapped 1-D token-id file: flat little-endian uint16 (.bin) or a 1-D integer .npy."""

    path: Path
    tokens: np.ndarray  # (N,) read-only memory map in the file's own dtype
    offset: int  # bytes before the first token (the .npy header)
    identity: dict  # cache.identity when opened: what the cache knows it by, and how a change mid-run is seen
    fd: int  # the file, open from the start: every read is of the file opened (a new one under its name is not)

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """tokens[i:i + length] for each start i of `starts` (any shape) as int32 (..., length), read with pread:
        a file truncated under a memory map would kill the process (SIGBUS); a short read is one clear error."""
        item = self.tokens.dtype.itemsize
        flat = starts.reshape(-1).tolist()
        out = np.empty((len(flat), length), np.int32)
        for k, i in enumerate(flat):
            raw = os.pread(self.fd, length * item, self.offset + i * item)
            if len(raw) != length * item:
                raise UserError(f"token file {self.path} changed during the run (truncated to "
                                f"{os.fstat(self.fd).st_size} bytes): stopped rather than train on other data")
            out[k] = np.frombuffer(raw, self.tokens.dtype)
        return out.reshape(*starts.shape, length)

    def check_unchanged(self) -> None:
        """Raise UserError if the file was rewritten or truncated in place since it was opened (a file put in its
        place under its name changes nothing: the run goes on reading the one it opened)."""
        st = os.fstat(self.fd)
        deleted = st.st_nlink == 0  # (a newer encoding's clean-up: deleting sets ctime, nothing can rewrite it now)
        if not cache.same_file(self.identity, st) and not (
                deleted and self.identity["stat"][:4] == cache.stat_key(st)[:4]):
            raise UserError(f"token file {self.path} changed during the run (size {self.identity['stat'][2]} -> "
                            f"{st.st_size} bytes, or rewritten): stopped rather than train on other data")


def _npy_mapped(f: BinaryIO) -> tuple[np.ndarray, int]:
    """The array of the open .npy file `f`, memory-mapped, and its offset: np.load's mmap_mode, on a file already
    open (np.load maps by name only, a second open that could meet another file, or block on a FIFO)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
    if read_header is None:  # (3.0 differs only in non-Latin-1 field names: a structured dtype, never token ids)
        raise ValueError(f"format version {version[0]}.{version[1]}, not 1.0 or 2.0")
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise ValueError("its dtype holds Python objects, which cannot be memory-mapped")
    offset = f.tell()
    return np.memmap(f, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset), offset


def _mapped(f: BinaryIO, path: Path, size: int, dtype: str | None) -> tuple[np.ndarray, int]:
    """The tokens of the open file `f` (of `path`, `size` bytes) memory-mapped, and their offset in it."""
    try:
        if dtype is not None or path.suffix == ".bin":
            item = np.dtype(dtype or "<u2").itemsize
            if size % item:
                raise UserError(f"{path} is not a flat uint{8 * item} token file: its size ({size} bytes) "
                                f"{'is odd' if item == 2 else f'is not a multiple of {item}'}")
            return np.memmap(f, dtype=dtype or "<u2", mode="r"), 0
        return _npy_mapped(f)
    except UserError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable .npy array ({str(e).splitlines()[0] if str(e) else e!r})") from None


def open_tokens(path: Path, dtype: str | None = None) -> TokenFile:
    """Memory-map a token file and check its layout (not its values: `scan` reads those). `dtype`: of a flat file
    (the cache's encodings); else by the suffix, .bin being nanoGPT's uint16. The file is opened once, through the
    checked open (a FIFO or a device refused at once; no size limit): the map and every later read are of it."""
    with open_checked(path, "data file") as f:
        st = os.fstat(f.fileno())
        if st.st_size == 0:
            raise UserError(f"data file is empty: {path}")
        tokens, offset = _mapped(f, path, st.st_size, dtype)
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise UserError(f"{path} must hold a 1-D integer array of token ids, got {tokens.dtype} {tokens.shape}")
        if tokens.size == 0:
            raise UserError(f"data file is empty: {path}")
        fd, ident = os.dup(f.fileno()), cache.identity(path, st)  # (the map holds the file itself: f may close)
    if not cache.same_file(ident, os.fstat(fd)):  # written to while it was mapped: the map may be of neither
        os.close(fd)
        raise UserError(f"token file {path} changed while it was opened: run again once nothing writes to it")
    tf = TokenFile(path, tokens, offset, ident, fd)
    weakref.finalize(tf, os.close, fd)
    return tf


@dataclasses.dataclass(frozen=True)
class Scan:
    """What one streaming pass over a token file learns."""

    sha256: str
    min_id: int
    max_id: int


def _chunks(tf: TokenFile, hasher=None):
    """(position, tokens) pieces of the whole file in order, read with plain reads into one reused buffer (not
    through the map: pages read through a map stay in the process's memory); `hasher` sees every byte, the
    header too. Each piece is valid until the next one is read."""
    item = tf.tokens.dtype.itemsize
    buf = np.empty(CHUNK, tf.tokens.dtype)
    with open(os.dup(tf.fd), "rb", buffering=0) as f:  # the file opened (a duplicate: closing it keeps tf's)
        f.seek(0)
        head = f.read(tf.offset)
        if hasher is not None:
            hasher.update(head)
        pos = 0
        while True:
            got = f.readinto(memoryview(buf).cast("B"))
            if not got:
                return
            if hasher is not None:
                hasher.update(memoryview(buf).cast("B")[:got])
            yield pos, buf[:got // item]
            pos += got // item


def _entry(tf: TokenFile, name: str) -> tuple[Path, dict]:
    """(where the cache keeps entry `name` of this file, the key it must carry)."""
    return cache.source_folder("tokens", tf.path) / f"{name}.entry", {"kind": "tokens", "name": name,
                                                                      "source": tf.identity}


def scan(tf: TokenFile) -> Scan:
    """sha256 and id range of the file: from the cache, else one streaming pass (then cached)."""
    entry = cache.read(*_entry(tf, "scan"))
    if entry is not None:
        return Scan(str(entry["sha256"]), int(entry["min_id"]), int(entry["max_id"]))
    h, lo, hi, n = hashlib.sha256(), None, None, 0
    for _, piece in _chunks(tf, h):
        lo = int(piece.min()) if lo is None else min(lo, int(piece.min()))
        hi = int(piece.max()) if hi is None else max(hi, int(piece.max()))
        n += len(piece)
    tf.check_unchanged()
    if n != len(tf.tokens):
        raise UserError(f"token file {tf.path} changed while it was read")
    out = Scan(h.hexdigest(), lo, hi)
    cache.write(*_entry(tf, "scan"), {"sha256": np.array(out.sha256), "min_id": np.array(lo), "max_id": np.array(hi)})
    return out


def split_counts(tf: TokenFile, lo: int, hi: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse counts (pair ids i * stride + j, how often) of the transitions inside tokens[lo:hi]; cached."""
    name = f"counts_{lo}_{hi}_{stride}"
    entry = cache.read(*_entry(tf, name))
    if entry is not None:
        return entry["ids"], entry["n"]
    counter, prev = PairCounter(stride), None
    for pos, piece in _chunks(tf):
        a, b = max(lo, pos), min(hi, pos + len(piece))
        if a >= b:
            continue
        part = piece[a - pos:b - pos]
        if prev is not None and a == pos and a > lo:  # the transition across the read boundary
            counter.add(np.array([prev]), part[:1])
        counter.add(part[:-1], part[1:])
        prev = part[-1]
    tf.check_unchanged()
    ids, n = counter.result()
    cache.write(*_entry(tf, name), {"ids": ids, "n": n})
    return ids, n
