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
import concurrent.futures
import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from bigram_jax.corpus import token_file
from bigram_jax.corpus.tokenizers import CharTokenizer, code_points
from bigram_jax.errors import UserError
from bigram_jax.store import cache, locks

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


def _vocab_and_sha(path: Path, size: int) -> tuple[str, str]:
    """Pass 1: the sorted characters of the file's first `size` bytes, and their sha256."""
    h, seen = hashlib.sha256(), np.zeros(0, np.uint32)
    for raw, text in _decoded(path, size):
        h.update(raw)
        seen = np.union1d(seen, code_points(text))
    if len(seen) > 65536:
        raise UserError(f"{path} has {len(seen)} distinct characters: more than a uint16 token file holds")
    return "".join(map(chr, seen.tolist())), h.hexdigest()


def batch_items(text: str, offset: int, final: bool, path: Path) -> tuple[list[str], str]:
    """(batch items, the rest) of `text`, which begins at character `offset` of the file: an item ends at the first
    cut at or after each multiple of ITEM_CHARS; the rest waits for the next read (all of it, if final). Only the
    cuts near those multiples are looked for: a scan of every line would cost a tenth of the encoding."""
    bounds, target = [0], (offset // ITEM_CHARS + 1) * ITEM_CHARS - offset  # relative to text
    while target <= len(text):
        m = _LINE_START.search(text, max(target - 2, bounds[-1]))  # a cut ending at `target` starts <= 2 before
        while m is not None and m.end() < target:
            m = _LINE_START.search(text, m.end())
        if m is None:
            break
        bounds.append(m.end())
        target = ((offset + m.end()) // ITEM_CHARS + 1) * ITEM_CHARS - offset  # the multiples up to it: this cut
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
    """The ids of the file's text into `out`; its sha256 (checked against pass 1's `sha`, when there was one).
    A character table encodes each read as it comes (a character's id depends on it alone): nothing to cut. The
    tokenizer encodes one read's items while this thread reads, hashes and cuts the next and writes the last."""
    h, rest, offset, chars = hashlib.sha256(), "", 0, isinstance(tok, CharTokenizer)
    with concurrent.futures.ThreadPoolExecutor(1) as pool, open(out, "wb") as f:
        pending = None
        for raw, text in _decoded(path, st.st_size):
            h.update(raw)
            items, new_rest = ([text], "") if chars else batch_items(rest + text, offset, not raw, path)
            offset += len(rest) + len(text) - len(new_rest)
            rest = new_rest
            encoding = pool.submit(tok.encode_batch, items)
            if pending is not None:
                _write(pending, f, dtype, path, sha)
            pending = encoding
        _write(pending, f, dtype, path, sha)
    if (sha is not None and h.hexdigest() != sha) or cache.stat_key(st) != cache.stat_key(path.stat()):
        raise _changed(path)
    return h.hexdigest()


def _write(encoding: concurrent.futures.Future, f: IO, dtype: str, path: Path, sha: str | None) -> None:
    """One read's ids, once encoded, onto the end of the token file."""
    try:
        ids = encoding.result()
    except UserError:
        if sha is None:  # a named table that lacks a character of the text
            raise
        raise _changed(path) from None  # a character pass 1 did not see: the file changed
    for piece in ids:
        piece.astype(dtype).tofile(f)


def _locked(folder: Path, path: Path) -> IO:
    """The encoding folder, made and locked (runs started together: one encodes, the others wait for it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = locks.acquire(folder / "lock", wait=False)
        if lock is None:
            print(f"note: waiting for another run that encodes {path}", file=sys.stderr, flush=True)
            lock = locks.acquire(folder / "lock", wait=True)
    except OSError as e:
        raise UserError(f"cannot write the cache folder {folder} ({e.strerror}): a text is encoded there; set "
                        "XDG_CACHE_HOME to a writable folder") from None
    return lock


def _cached(folder: Path, found: dict) -> token_file.TokenFile | None:
    """The token file an entry names, open, if it is still the file the entry recorded."""
    try:
        tf = token_file.open_tokens(folder / str(found["file"]), str(found["dtype"]))
    except UserError:
        return None
    return tf if tf.identity["stat"] == found["tokens_file"].tolist() else None


def encode_to_cache(path: Path, st: os.stat_result, tok: Any = None) -> tuple[token_file.TokenFile, Any, str]:
    """(the cached token file, open; the tokenizer; sha256 of the text) for a text file and a tokenizer (None:
    its own characters, collected by a first pass); encoded now unless the cache holds it. Each version of a
    text has a token file of its own: a new encoding never replaces the file a running run reads."""
    name = tok.identity[:20] if tok is not None else "chars"
    folder, key = cache.source_folder("text", path) / name, {"kind": "text", "name": name,
                                                             "source": cache.identity(path, st)}
    with _locked(folder, path):
        found = cache.read(folder / "encoding.entry", key)
        tf = _cached(folder, found) if found is not None else None
        if tf is not None:
            return tf, tok if tok is not None else CharTokenizer(str(found["vocab"])), str(found["sha256"])
        for stale in folder.glob("*.tmp"):  # a stopped encoding's (a stop exits at once, skipping clean-up)
            stale.unlink(missing_ok=True)
        first_sha = None
        if tok is None:
            vocab, first_sha = _vocab_and_sha(path, st.st_size)
            tok = CharTokenizer(vocab)
        elif not isinstance(tok, CharTokenizer):
            _check_cuttable(tok, path)
        dtype = "<u2" if tok.vocab_size <= 1 << 16 else "<u4"
        file = f"tokens-{hashlib.sha256(repr(key).encode()).hexdigest()[:16]}.bin"
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
        try:
            sha = _encode(path, st, tok, first_sha, tmp, dtype)
            if tmp.stat().st_size == 0:
                raise UserError(f"data file is empty: {path}")
            os.replace(tmp, folder / file)
        finally:
            tmp.unlink(missing_ok=True)
        for old in folder.glob("tokens-*.bin"):  # earlier versions' (a run reading one holds it open: it goes on)
            if old.name != file:
                old.unlink(missing_ok=True)
        tf = token_file.open_tokens(folder / file, dtype)
        cache.write(folder / "encoding.entry", key, {"vocab": np.array(getattr(tok, "vocab", None) or ""),
                    "sha256": np.array(sha), "dtype": np.array(dtype), "file": np.array(file),
                    "tokens_file": np.array(tf.identity["stat"])})
    return tf, tok, sha
