"""Text corpora encoded once, streaming, into a cached token file: texts too big to decode at once (the lecture's
characters), and every text read with a named tokenizer (meta.pkl, tiktoken, tokenizer.json), whatever its size.

Reads of CHUNK bytes over the size the file had when the run saw it. A tokenizer's ids must be the whole text's:
the text is cut into batch items (encoded on all cores, one after the other) only where the tokenizer's kind is
proved to leave them so (bpe.py: `cut_rules`, from its split pattern, pre-tokenizer, normalizer and added tokens),
and an item ends at the first such cut after every ITEM_CHARS characters of the file, so the ids never depend on
the read size or the text's length, and no item passes MAX_ITEM characters (memory stays bounded, whatever the
line structure). A tokenizer of no proved kind is not cut: a text of up to WHOLE_MAX characters is encoded whole,
a longer one refused. Characters a tokenizer.json would drop are refused by name; those it sends to its unknown
token are counted and said. The lecture's characters take a first pass that collects them (the vocabulary). The
file must not change meanwhile: the second pass hashes it again, and a character the first did not see, another
hash or another identity afterwards is one clear error. Runs that start together on one new text take turns (a
lock): the first encodes, the others read its result.
"""
from __future__ import annotations

import codecs
import collections
import concurrent.futures
import dataclasses
import hashlib
import itertools
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
ITEM_CHARS = 1 << 16  # a batch item ends at the first cut after each multiple of this many characters
MAX_ITEM = 1 << 20  # characters an item may have: tokenizers take ~150 bytes a character encoding one item
WHOLE_MAX = 4 << 20  # characters of a text encoded whole, by a tokenizer that cannot be cut
# the cut points of bpe.py's rules, as zero-width matches: 'space' before a ' ' after a non-space character;
# 'line' after a '\n' after a non-space character, before a character neither whitespace nor '/'
_CUTS = {"space": r"(?<=\S)(?= )", "line": r"(?<=\S\n)(?=[^\s/])"}


@dataclasses.dataclass(frozen=True)
class Cutter:
    """Where a tokenizer's text may be cut into batch items, and how long an item may be."""

    pattern: re.Pattern | None  # zero-width matches at the cut points; None: nowhere (the text is one item)
    limit: int  # characters an item may have
    why: str  # what the cut points are, or why there are none (for the refusal of a longer item)

    def refusal(self, path: Path, at: int) -> UserError:
        if self.pattern is None:
            return UserError(f"{path} is over {self.limit:,} characters, and its tokenizer cannot be cut ({self.why}): "
                             "such a tokenizer encodes a text whole, in memory; encode it into token ids yourself "
                             "and pass those (.npy or .bin)")
        return UserError(f"{path} has no place where its tokenizer's pieces provably end ({self.why}) for over "
                         f"{self.limit:,} characters from character {at:,}: a text is encoded in pieces of at most "
                         "that size; encode it into token ids yourself and pass those (.npy or .bin)")


def cutter(tok: Any) -> Cutter:
    """Where `tok`'s text may be cut: the rules its kind is proved to keep (bpe.py), else nowhere."""
    rules, why = getattr(tok, "cut_rules", (frozenset(), f"{tok.describe()} is of no kind proved cuttable"))
    if not rules:
        return Cutter(None, WHOLE_MAX, why)
    shown = " and ".join({"space": "before a space after a non-space", "line": "after a line break between "
                          "non-spaces"}[r] for r in sorted(rules))
    return Cutter(re.compile("|".join(_CUTS[r] for r in sorted(rules))), MAX_ITEM, shown)


SPACES_AND_LINES = Cutter(re.compile("|".join(_CUTS.values())), MAX_ITEM, "GPT-2's pattern")  # the bench's default


def _decoded(path: Path, size: int):
    """(raw bytes, their text) pieces of the first `size` bytes of a UTF-8 file, decoded incrementally (a
    character may span reads)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(min(CHUNK, size - done))
            held = len(decoder.getstate()[0])  # the last read's bytes of a character cut by the read: before `done`
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise UserError(f"data file is not UTF-8 text: {path} (bad byte at offset {done - held + e.start})"
                                ) from None
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


def batch_items(text: str, offset: int, final: bool, path: Path,
                cut: Cutter = SPACES_AND_LINES) -> tuple[list[str], str]:
    """(batch items, the rest) of `text`, which begins at character `offset` of the file and at a cut (or the
    file's start): an item ends at the first cut at or after each multiple of ITEM_CHARS; the rest waits for the
    next read (all of it, if final). Only the cuts near those multiples are looked for: a scan of every cut would
    cost a tenth of the encoding. An item (or a rest) longer than the cutter allows is refused."""
    bounds, target = [0], (offset // ITEM_CHARS + 1) * ITEM_CHARS - offset  # relative to text
    while cut.pattern is not None and target <= len(text):
        m = cut.pattern.search(text, target)  # (its lookbehind sees the characters before `target`)
        if m is None:
            break
        bounds.append(m.start())
        target = ((offset + m.start()) // ITEM_CHARS + 1) * ITEM_CHARS - offset  # the multiples up to it: this cut
    if final:
        bounds.append(len(text))
    ends = [*bounds, len(text)]
    longest = max(range(len(ends) - 1), key=lambda k: ends[k + 1] - ends[k])
    if ends[longest + 1] - ends[longest] > cut.limit:
        raise cut.refusal(path, offset + ends[longest])
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a], text[bounds[-1]:]


class _Census:
    """The characters of a text, counted as it is read, for a tokenizer that may lack some: one it would drop is
    refused by name; those it encodes as its unknown token are counted."""

    def __init__(self, tok: Any, path: Path):
        self.tok, self.path = tok, path
        self.counts = np.zeros(0x110000, np.int64)  # occurrences by code point (9 MB)
        self.unknown: list[int] = []  # code points that go to the unknown token

    def add(self, text: str) -> None:
        before = self.counts > 0
        self.counts += np.bincount(code_points(text), minlength=len(self.counts))
        new = np.flatnonzero((self.counts > 0) & ~before).tolist()
        if new:
            from bigram_jax.corpus import bpe

            dropped, unknown = self.tok.unencodable([chr(c) for c in new])
            if dropped:
                raise bpe.lacking(self.tok, dropped, str(self.path))
            self.unknown += [ord(ch) for ch in unknown]

    def went_unknown(self) -> int:
        return int(self.counts[self.unknown].sum())


def _changed(path: Path) -> UserError:
    return UserError(f"data file {path} changed while it was encoded: run again once nothing writes to it")


def _batches(buf: str, offset: int, final: bool, split: int | None, cut: Cutter | None,
             path: Path) -> tuple[list[tuple[list[str], bool]], str]:
    """(batches of items, each with whether it ends the text's first part; the rest) of `buf`, which begins at
    character `offset`. At `split` (when it falls in `buf`) the text is two texts, each encoded on its own
    (nanoGPT's split): the first part ends there, and the second starts there as a text's start does."""
    if split is not None and offset <= split <= offset + len(buf) and not (split == offset + len(buf) and not final):
        head, _ = _batches(buf[:split - offset], offset, True, None, cut, path)
        tail, rest = _batches(buf[split - offset:], split, final, None, cut, path)
        return [(head[0][0], True), *tail], rest
    if cut is None:  # a character table: each read as it comes
        return [([buf], False)], ""
    items, rest = batch_items(buf, offset, final, path, cut)
    return [(items, False)], rest


def _encode(path: Path, st: os.stat_result, tok: Any, sha: str | None, out: Path, dtype: str,
            split: int | None = None) -> tuple[str, int, int]:
    """The ids of the file's text into `out`; (its sha256, checked against pass 1's `sha` when there was one; how
    many characters went to the tokenizer's unknown token; the ids of the text's first `split` characters, encoded
    on their own, 0 when no split). A character table encodes each read as it comes (a character's id depends on
    it alone): nothing to cut. The tokenizer encodes one read's items while this thread reads, hashes and cuts the
    next and writes the last."""
    h, rest, offset, written, n_first = hashlib.sha256(), "", 0, 0, 0
    cut = None if isinstance(tok, CharTokenizer) else cutter(tok)
    census = _Census(tok, path) if getattr(tok, "checks_characters", False) else None
    queue: collections.deque = collections.deque()  # (encoding, whether it ends the first part), in text order
    with concurrent.futures.ThreadPoolExecutor(1) as pool, open(out, "wb", buffering=0) as f:
        for raw, text in _decoded(path, st.st_size):
            h.update(raw)
            if census is not None:
                census.add(text)
            batches, new_rest = _batches(rest + text, offset, not raw, split, cut, path)
            if any(first for _, first in batches):
                split = None  # (done: the first part's items are queued)
            offset += len(rest) + len(text) - len(new_rest)
            rest = new_rest
            queue.extend((pool.submit(tok.encode_batch, items), first) for items, first in batches)
            while len(queue) > 1 or (queue and not raw):
                encoding, first = queue.popleft()
                written += _write(encoding, f, dtype, path, sha, out)
                n_first = written if first else n_first
    if (sha is not None and h.hexdigest() != sha) or cache.stat_key(st) != cache.stat_key(path.stat()):
        raise _changed(path)
    return h.hexdigest(), census.went_unknown() if census is not None else 0, n_first


def _write(encoding: concurrent.futures.Future, f: IO, dtype: str, path: Path, sha: str | None, out: Path) -> int:
    """One batch's ids, once encoded, onto the end of the token file `out`; how many."""
    try:
        ids = encoding.result()
    except UserError:
        if sha is None:  # a named table that lacks a character of the text
            raise
        raise _changed(path) from None  # a character pass 1 did not see: the file changed
    if not ids:
        return 0
    ids = np.concatenate(ids)
    token_file.write_ids(f, ids, dtype, out)
    return len(ids)


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


def _unknown_note(n: int, path: Path, tok: Any) -> None:
    if n:
        print(f"note: {n:,} character(s) of {path} went to {tok.unknown_name}", file=sys.stderr, flush=True)


def _char_count(path: Path, size: int) -> int:
    """The characters of the file's first `size` bytes of UTF-8: the bytes that start one."""
    n, done = 0, 0
    with open(path, "rb") as f:
        while done < size:
            raw = f.read(min(CHUNK, size - done))
            if not raw:
                break
            n += int(np.count_nonzero((np.frombuffer(raw, np.uint8) & 0xC0) != 0x80))
            done += len(raw)
    return n


def encode_to_cache(path: Path, st: os.stat_result, tok: Any = None, train_frac: float | None = None) -> tuple:
    """(the cached token file, open; the tokenizer; sha256 of the text) for a text file and a tokenizer (None:
    its own characters, collected by a first pass); encoded now unless the cache holds it. Each version of a
    text has a token file of its own: a new encoding never replaces the file a running run reads.

    With `train_frac`, nanoGPT's split: the text's first int(train_frac * characters) characters and the rest are
    encoded each on its own, and a fourth value is returned, the number of ids of the first (the train split)."""
    name = (tok.identity[:20] if tok is not None else "chars") + ("" if train_frac is None else f"-{train_frac!r}")
    folder, key = cache.source_folder("text", path) / name, {"kind": "text", "name": name,
                                                             "source": cache.identity(path, st)}
    with _locked(folder, path):
        found = cache.read(folder / "encoding.entry", key)
        tf = _cached(folder, found) if found is not None else None
        if tf is not None:
            tok = tok if tok is not None else CharTokenizer(str(found["vocab"]))
            _unknown_note(int(found["unknown"]) if "unknown" in found else 0, path, tok)
            sha, n_train = str(found["sha256"]), int(found["n_train"]) if "n_train" in found else 0
        else:
            tf, tok, sha, n_train = _encode_new(folder, key, path, st, tok, train_frac)
    return (tf, tok, sha) if train_frac is None else (tf, tok, sha, n_train)


def _encode_new(folder: Path, key: dict, path: Path, st: os.stat_result, tok: Any,
                train_frac: float | None) -> tuple[token_file.TokenFile, Any, str, int]:
    """encode_to_cache's work when the cache lacks the text (its folder locked): encoded, stored, recorded."""
    for stale in folder.glob("*.tmp"):  # a stopped encoding's (a stop exits at once, skipping clean-up)
        stale.unlink(missing_ok=True)
    first_sha = None
    if tok is None:
        vocab, first_sha = _vocab_and_sha(path, st.st_size)
        tok = CharTokenizer(vocab)
    split = None if train_frac is None else int(train_frac * _char_count(path, st.st_size))
    dtype = token_file.dtype_for(getattr(tok, "max_id", tok.vocab_size - 1))
    file = f"tokens-{hashlib.sha256(repr(key).encode()).hexdigest()[:16]}.bin"
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as f:
        tmp = Path(f.name)
    try:
        sha, unknown, n_train = _encode(path, st, tok, first_sha, tmp, dtype, split)
        if tmp.stat().st_size == 0:
            raise UserError(f"data file is empty: {path}" if st.st_size == 0 else
                            f"the tokenizer {tok.describe()} encodes {path} to nothing (no token ids)")
        os.replace(tmp, folder / file)
    finally:
        tmp.unlink(missing_ok=True)
    for old in folder.glob("tokens-*.bin"):  # earlier versions' (a run reading one holds it open: it goes on)
        if old.name != file:
            old.unlink(missing_ok=True)
    tf = token_file.open_tokens(folder / file, dtype)
    cache.write(folder / "encoding.entry", key, {"vocab": np.array(getattr(tok, "vocab", None) or ""),
                "sha256": np.array(sha), "dtype": np.array(dtype), "file": np.array(file),
                "tokens_file": np.array(tf.identity["stat"]), "unknown": np.array(unknown),
                "n_train": np.array(n_train)})
    _unknown_note(unknown, path, tok)
    return tf, tok, sha, n_train
