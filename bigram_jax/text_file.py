"""Text corpora encoded once, streaming, into a cached token file: texts too big to decode at once (the lecture's
characters), and every text read with a named tokenizer (meta.pkl, tiktoken, tokenizer.json), whatever its size.

Reads of CHUNK bytes over the size the file had when the run saw it. A text is encoded line by line: it may be
cut after a line break with a non-space character on either side. The split patterns of GPT-2, cl100k and o200k
end a piece there, whatever follows (for GPT-2's, a CR LF line end is the one exception), so the ids equal an
encoding of the whole text. The batch items sent to the tokenizer's batch API (all cores) end at the first such
cut after every ITEM_CHARS characters of the file: the ids never depend on the read size or the text's length.
The lecture's characters take a first pass that collects them (the vocabulary). The file must not change
meanwhile: the second pass hashes it again, and a character the first did not see, another hash or another
identity afterwards is one clear error. Runs that start together on one new text take turns (a lock): the first
encodes, the others read its result.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bigram_jax import cache, locks
from bigram_jax.errors import UserError
from bigram_jax.tokenizers import CharTokenizer

IN_MEMORY_MAX = 256 << 20  # bytes of text the lecture's characters decode at once; larger files are streamed
CHUNK = 16 << 20  # bytes per read
ITEM_CHARS = 1 << 16  # a batch item ends at the first line start after each multiple of this many characters
MAX_LINE = 1 << 26  # characters a line may have: the text is encoded a line (at least) at a time
_LINE_START = re.compile(r"(?<=\S)\r?\n(?=\S)")  # a cut: after a line break with non-space on either side


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


def batch_items(text: str, offset: int, final: bool, path: Path) -> tuple[list[str], str]:
    """(batch items, the rest) of `text`, which begins at character `offset` of the file: an item ends at the first
    line start at or after each multiple of ITEM_CHARS; the rest waits for the next read (all of it, if final)."""
    starts = np.fromiter((m.end() for m in _LINE_START.finditer(text)), np.int64) + offset  # absolute, sorted
    targets = np.arange((offset // ITEM_CHARS + 1) * ITEM_CHARS, offset + len(text) + 1, ITEM_CHARS)
    found = np.searchsorted(starts, targets)
    bounds = [0, *(np.unique(starts[found[found < len(starts)]]) - offset).tolist()]
    if final:
        bounds.append(len(text))
    elif len(text) - bounds[-1] > MAX_LINE:
        raise UserError(f"{path} has no line break between non-space characters for {MAX_LINE:,} characters: a "
                        "text is encoded a line at a time")
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a], text[bounds[-1]:]


# texts cut where batch_items may cut them: a tokenizer must encode each as it encodes its halves, one after the other
_PROBES = (("First Citizen:\nBefore we proceed", 15), ("a.\nB", 3), ("12\n34", 3))


def _check_cuttable(tok: Any, path: Path) -> None:
    """Refuse a tokenizer whose ids for a text change when it is cut at a line break (one that adds a space before
    every text it encodes, say): the cached ids would not be this text's."""
    for text, cut in _PROBES:
        if tok.encode(text).tolist() != tok.encode(text[:cut]).tolist() + tok.encode(text[cut:]).tolist():
            raise UserError(f"the tokenizer {tok.describe()} encodes {text!r} differently from its lines one after "
                            f"the other (a prefix space?), and {path} is encoded line by line: encode the text whole "
                            "into token ids yourself and pass those (.npy or .bin)")


def _changed(path: Path) -> UserError:
    return UserError(f"data file {path} changed while it was encoded: run again once nothing writes to it")


def _encode(path: Path, st: os.stat_result, tok: Any, sha: str | None, out: Path, dtype: str) -> str:
    """The ids of the file's text into `out`; its sha256 (checked against pass 1's `sha`, when there was one)."""
    h, rest, offset = hashlib.sha256(), "", 0
    with open(out, "wb") as f:
        for raw, text in _decoded(path, st.st_size):
            h.update(raw)
            items, new_rest = batch_items(rest + text, offset, not raw, path)
            offset += len(rest) + len(text) - len(new_rest)
            rest = new_rest
            try:
                ids = tok.encode_batch(items)
            except UserError:
                if sha is None:  # a named table that lacks a character of the text
                    raise
                raise _changed(path) from None  # a character pass 1 did not see: the file changed
            for piece in ids:
                piece.astype(dtype).tofile(f)
    if (sha is not None and h.hexdigest() != sha) or not cache.same_file(cache.identity(path, st), path.stat()):
        raise _changed(path)
    return h.hexdigest()


def encode_to_cache(path: Path, st: os.stat_result, tok: Any = None) -> tuple[Path, str, Any, str]:
    """(cached token file, its dtype, the tokenizer, sha256 of the text) for a text file and a tokenizer (None:
    its own characters, collected by a first pass); encoded now unless the cache holds it."""
    name = tok.identity[:20] if tok is not None else "chars"
    folder = cache.source_folder("text", path) / name
    entry = folder / "encoding.entry"
    key = {"kind": "text", "name": name, "source": cache.identity(path, st)}
    bin_path = folder / "tokens.bin"
    folder.mkdir(parents=True, exist_ok=True)
    with locks.acquire(folder / "lock", wait=True):  # runs started together: one encodes, the others wait for it
        found = cache.read(entry, key)
        if found is not None and bin_path.exists() and cache.same_file(
                {"stat": found["tokens_file"].tolist()}, bin_path.stat()):
            vocab = str(found["vocab"])
            return bin_path, str(found["dtype"]), tok if tok is not None else CharTokenizer(vocab), str(found["sha256"])
        first_sha = None
        if tok is not None:
            _check_cuttable(tok, path)
        if tok is None:
            vocab, first_sha = _vocab_and_sha(path, st.st_size)
            tok = CharTokenizer(vocab)
        dtype = "<u2" if tok.vocab_size <= 1 << 16 else "<u4"
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
        try:
            sha = _encode(path, st, tok, first_sha, tmp, dtype)
            if tmp.stat().st_size == 0:
                raise UserError(f"data file is empty: {path}")
            os.replace(tmp, bin_path)
        finally:
            tmp.unlink(missing_ok=True)
        cache.write(entry, key, {"vocab": np.array(getattr(tok, "vocab", None) or ""), "sha256": np.array(sha),
                                 "dtype": np.array(dtype), "tokens_file": np.array(cache.identity(bin_path)["stat"])})
    return bin_path, dtype, tok, sha
