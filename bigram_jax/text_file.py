"""Text corpora too big to decode at once: encoded once, streaming, into a cached token file with its vocabulary.

Two passes of CHUNK bytes: the first checks the UTF-8, hashes the file and collects its characters (the lecture's
vocabulary: their sorted set); the second writes each character's id as uint16 into the cache. From then on
the corpus is a token file like nanoGPT's train.bin (memory-mapped, counted by the streaming pass) with the
characters of its vocabulary, and a later run finds both in the cache.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from bigram_jax import cache, token_file
from bigram_jax.errors import UserError

IN_MEMORY_MAX = 256 << 20  # bytes of text decoded at once, as the lecture does; larger files are streamed
CHUNK = 16 << 20  # bytes per read


def _decoded(path: Path):
    """(raw bytes, their text) pieces of a UTF-8 file, decoded incrementally (a character may span reads)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(CHUNK)
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


def _vocab_and_sha(path: Path) -> tuple[str, str]:
    """Pass 1: the sorted characters of the file, and its sha256."""
    h, seen = hashlib.sha256(), np.zeros(0, np.uint32)
    for raw, text in _decoded(path):
        h.update(raw)
        seen = np.union1d(seen, _points(text))
    if len(seen) > 65536:
        raise UserError(f"{path} has {len(seen)} distinct characters: more than a uint16 token file holds")
    return "".join(map(chr, seen.tolist())), h.hexdigest()


def encode_to_cache(path: Path, st: os.stat_result) -> tuple[Path, str, str]:
    """(cached token file, vocabulary, sha256 of the text) for a large text file; encoded now unless cached."""
    entry = cache.text_entry(path, st)
    meta_path, bin_path = entry / "vocab.json", entry / "tokens.bin"
    try:
        meta = json.loads(meta_path.read_text())
        tf = token_file.open_tokens(bin_path)
        if len(tf.tokens) == meta["tokens"] and token_file.scan(tf).sha256 == meta["tokens_sha256"]:
            return bin_path, meta["vocab"], meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError, UserError):
        pass  # absent or damaged: encoded again
    vocab, sha = _vocab_and_sha(path)
    table = _points(vocab)  # sorted: a character's id is its index
    entry.mkdir(parents=True, exist_ok=True)
    n, tmp, h = 0, bin_path.with_suffix(".tmp"), hashlib.sha256()
    with open(tmp, "wb") as f:
        for _, text in _decoded(path):
            ids = np.searchsorted(table, _points(text)).astype("<u2")
            h.update(ids.tobytes())
            ids.tofile(f)
            n += len(ids)
    if n == 0:
        raise UserError(f"data file is empty: {path}")
    os.replace(tmp, bin_path)
    meta_path.write_text(json.dumps({"vocab": vocab, "sha256": sha, "tokens": n, "tokens_sha256": h.hexdigest()}))
    return bin_path, vocab, sha
