"""Text corpora too big to decode at once: encoded once, streaming, into a cached token file with its vocabulary.

Two passes of CHUNK bytes over the size the file had when the run saw it: the first checks the UTF-8, hashes the
file and collects its characters (the lecture's vocabulary: their sorted set); the second writes each character's
id as uint16 into the cache, hashing again. A file that changes between or during the passes (appended to, rewritten)
fails the second pass's checks: one clear error, never ids of another text. From then on the corpus is a token file
like nanoGPT's train.bin (memory-mapped, counted by the streaming pass), and a later run finds it in the cache.
Runs that start together on one new text take turns (a lock): the first encodes, the others read its result.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from bigram_jax import cache, locks
from bigram_jax.errors import UserError

IN_MEMORY_MAX = 256 << 20  # bytes of text decoded at once, as the lecture does; larger files are streamed
CHUNK = 16 << 20  # bytes per read


def _decoded(path: Path, size: int):
    """(raw bytes, their text) pieces of the first `size` bytes of a UTF-8 file, decoded incrementally (a
    character may span reads)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(min(CHUNK, size - done))
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise UserError(f"data file is not UTF-8 text: {path} (bad byte at offset {done + e.start})") from None
            if "\x00" in text:
                raise UserError(f"data file looks binary (NUL bytes): {path}")
            yield raw, text
            if not raw:
                return
            done += len(raw)


def _points(text: str) -> np.ndarray:
    """The code points of `text`, (len,) uint32."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _vocab_and_sha(path: Path, size: int) -> tuple[str, str]:
    """Pass 1: the sorted characters of the file's first `size` bytes, and their sha256."""
    h, seen = hashlib.sha256(), np.zeros(0, np.uint32)
    for raw, text in _decoded(path, size):
        h.update(raw)
        seen = np.union1d(seen, _points(text))
    if len(seen) > 65536:
        raise UserError(f"{path} has {len(seen)} distinct characters: more than a uint16 token file holds")
    return "".join(map(chr, seen.tolist())), h.hexdigest()


def _changed(path: Path) -> UserError:
    return UserError(f"data file {path} changed while it was encoded: run again once nothing writes to it")


def _encode(path: Path, st: os.stat_result, vocab: str, sha: str, out: Path) -> int:
    """Pass 2: the ids of the file's characters into `out` (uint16); the number of tokens."""
    table, h, n = _points(vocab), hashlib.sha256(), 0  # sorted: a character's id is its index
    with open(out, "wb") as f:
        for raw, text in _decoded(path, st.st_size):
            h.update(raw)
            points = _points(text)
            ids = np.minimum(np.searchsorted(table, points), len(table) - 1)
            if not np.array_equal(table[ids], points):  # a character pass 1 did not see: the file changed
                raise _changed(path)
            ids.astype("<u2").tofile(f)
            n += len(ids)
    if h.hexdigest() != sha or not cache.same_file(cache.identity(path, st), path.stat()):
        raise _changed(path)
    return n


def encode_to_cache(path: Path, st: os.stat_result) -> tuple[Path, str, str]:
    """(cached token file, vocabulary, sha256 of the text) for a large text file; encoded now unless cached."""
    folder = cache.source_folder("text", path)
    entry, key = folder / "encoding.entry", {"kind": "text", "name": "encoding", "source": cache.identity(path, st)}
    bin_path = folder / "tokens.bin"
    folder.mkdir(parents=True, exist_ok=True)
    with locks.acquire(folder / "lock", wait=True):  # runs started together: one encodes, the others wait for it
        found = cache.read(entry, key)
        if found is not None and bin_path.exists() and cache.same_file(
                {"stat": found["tokens_file"].tolist()}, bin_path.stat()):
            return bin_path, str(found["vocab"]), str(found["sha256"])
        vocab, sha = _vocab_and_sha(path, st.st_size)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
        try:
            if _encode(path, st, vocab, sha, tmp) == 0:
                raise UserError(f"data file is empty: {path}")
            os.replace(tmp, bin_path)
        finally:
            tmp.unlink(missing_ok=True)
        stored = cache.identity(bin_path)["stat"]
        cache.write(entry, key, {"vocab": np.array(vocab), "sha256": np.array(sha), "tokens_file": np.array(stored)})
    return bin_path, vocab, sha
