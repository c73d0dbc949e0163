"""Tokenizers: text <-> token ids for every kind a corpus comes with, behind one interface.

    chars            the lecture's: the sorted characters of the text (its vocabulary is built from the corpus)
    meta.pkl         nanoGPT's character table (prepare.py's stoi/itos), read by a restricted unpickler
    gpt2, cl100k_base, ...   a tiktoken encoding by name (bpe.py)
    tokenizer.json   a Hugging Face tokenizer (bpe.py)
    ids              no tokenizer: token ids in and out, as whitespace-separated integers

Each has `vocab_size`, `encode(text)`, `encode_batch(texts)`, `decode(ids)`, `identity` (a digest of everything
that fixes the mapping: two tokenizers with one identity turn every text into the same ids) and `record()`, the
JSON a checkpoint keeps to rebuild it (`from_record`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bigram_jax.errors import UserError, first_line
from bigram_jax.store.files import check_nesting, read_checked


def code_points(text: str) -> np.ndarray:
    """The code points of `text`, (len,) uint32 (surrogates too: any str has them)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
    """A character table: id i is the character vocab[i]. The lecture's (the sorted set of the corpus characters),
    or nanoGPT's meta.pkl (`source` names the file)."""

    vocab: str
    source: str = ""  # '' for the corpus's own characters, else the meta.pkl it was read from
    text = True  # text in and out (TokenIds: integers)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from a corpus."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        """V, the number of distinct characters."""
        return len(self.vocab)

    @property
    def identity(self) -> str:
        return _digest({"chars": self.vocab})  # the table alone: meta.pkl and the text's own agree when equal

    def record(self) -> dict:
        return {"kind": "meta.pkl" if self.source else "chars", "vocab": self.vocab, "source": self.source}

    def describe(self) -> str:
        return f"{self.source} (nanoGPT's character table)" if self.source else "characters"

    def encode(self, s: str) -> np.ndarray:
        """String -> int32 ids; an unknown character is a UserError naming it. Vectorized: each code point (UTF-32)
        indexes a table of ids by code point (-1: not in the vocabulary), not character by character in Python."""
        points, vocab = code_points(s), code_points(self.vocab)  # (len(s),), (V,)
        top = max(int(points.max(initial=0)), int(vocab.max(initial=0)))  # at most 0x10FFFF: a table of <= 4.5 MB
        id_of = np.full(top + 1, -1, np.int32)
        id_of[vocab] = np.arange(len(vocab), dtype=np.int32)
        ids = id_of[points]  # (len(s),)
        bad = ids < 0
        if bad.any():
            unknown = sorted({chr(c) for c in points[bad].tolist()})
            shown = ", ".join(repr(ch) for ch in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise UserError(f"{len(unknown)} character(s) not in the vocabulary: {shown}")
        return ids

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        """Ids -> string."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise UserError(f"token ids must be in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}")
        return "".join(self.vocab[i] for i in ids.tolist())


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """Token-id data with no tokenizer: the ids are the tokens; text in and out is whitespace-separated ids."""

    vocab_size: int
    vocab = None  # no characters to show
    text = False
    identity = "ids"

    def record(self) -> dict:
        return {"kind": "ids"}

    def describe(self) -> str:
        return "none (token ids)"

    def encode(self, s: str) -> np.ndarray:
        """'12 7 400' (or comma-separated) -> int32 ids, each checked to be in [0, V)."""
        parts = s.replace(",", " ").split()
        if not parts or not all(p.isascii() and p.isdigit() for p in parts):
            raise UserError(f"token ids are whitespace-separated integers, got {s[:60]!r}")
        ids = [int(p) for p in parts]
        if any(i >= self.vocab_size for i in ids):  # before numpy: a 25-digit id would overflow int64
            raise UserError(f"token ids must be in [0, {self.vocab_size}), got {max(ids)}")
        return np.array(ids, np.int32)

    def decode(self, ids) -> str:
        """Ids -> '12 7 400'."""
        from bigram_jax.data import check_ids

        return " ".join(str(i) for i in check_ids(np.asarray(ids).reshape(-1), self.vocab_size).tolist())


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def show(tok: Any, ids: np.ndarray) -> str:
    """Sampled ids as text for a person: an id past the tokenizer's vocabulary (a table padded beyond it, never in
    the data) shows as U+FFFD, where decode would refuse it."""
    ids = np.asarray(ids).reshape(-1)
    if not tok.text or not (ids >= tok.vocab_size).any():
        return tok.decode(ids)
    known, out, start = ids < tok.vocab_size, [], 0
    for end in [*(np.flatnonzero(np.diff(known)) + 1).tolist(), len(ids)]:  # runs of known, then unknown, ids
        out.append(tok.decode(ids[start:end]) if known[start] else "\ufffd" * (end - start))
        start = end
    return "".join(out)


class _OnlyPlainData(pickle.Unpickler):
    """An unpickler that builds dicts, lists, tuples, strings, numbers, booleans and None, and nothing else: a
    pickle that names any class or function (what a malicious one must do to run code) is refused unrun."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it names {module}.{name}")


META_PKL_MAX = 16 << 20  # bytes: a character table of all 1,114,112 code points pickles to less
META_PKL_DEPTH = 8  # containers: nanoGPT's meta.pkl is a dict of dicts
_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}  # opcodes that name a memo index


def _plain_data(path: Path) -> Any:
    """The object a small pickle file holds, refused (UserError) unless it is plain data. Its opcodes are read
    first, without running any (pickletools): a memo index past the file's length (a pickle of a few bytes that
    would make the unpickler allocate gigabytes) is refused there, before the unpickler sees it."""
    import io
    import pickletools

    def refuse(why: str) -> UserError:
        return UserError(f"{path} is not a plain-data meta.pkl ({why}): only dict, list, tuple, str, int, float, "
                         "bool and None are read, and nothing in it was run")

    raw = read_checked(path, "meta.pkl", META_PKL_MAX)
    try:
        for op, arg, _ in pickletools.genops(raw):  # one at a time: a pickle holds fewer opcodes than bytes
            if op.name in _MEMO_OPS and arg >= len(raw):
                raise ValueError("a memo index past its end")
        value = _OnlyPlainData(io.BytesIO(raw)).load()
    except Exception as e:  # noqa: BLE001  (nothing was executed: whatever a bad file raises is the file's fault)
        raise refuse(first_line(e)) from None
    check_nesting(value, META_PKL_DEPTH, f"{path} (a meta.pkl)")  # nanoGPT's is 2 deep: {'itos': {0: 'a'}}
    return value


def _shown(value: Any) -> str:
    """A value from a file, for a message, in bounded words: never its whole repr (a 5000-digit int cannot be
    printed at all, a nested one overflows the stack, a long string would flood the line)."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length():,} bits"
    if isinstance(value, str):
        return repr(value[:40]) + (f"... ({len(value):,} characters)" if len(value) > 40 else "")
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value):,} items"
    return f"a {type(value).__name__}"


def _check_text_characters(path: Path, vocab: str) -> None:
    """Refuse a table holding a lone surrogate (U+D800..U+DFFF): it is no character of any text, so it could never
    be written out (samples, an export) and nothing should train on it."""
    points = code_points(vocab)
    bad = np.flatnonzero((points >= 0xD800) & (points <= 0xDFFF))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"{path}: its character of id {i} is U+{int(points[i]):04X}, a lone surrogate, not text "
                        "(no UTF-8 text holds one): a character table must hold a text's characters")


def read_meta_pkl(path: Path) -> CharTokenizer:
    """nanoGPT's meta.pkl ({'vocab_size', 'itos', 'stoi'}) as a character table, read safely and checked."""
    meta = _plain_data(path)
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if isinstance(itos, (list, tuple)):
        itos = dict(enumerate(itos))
    V = len(itos) if isinstance(itos, dict) else 0
    if not V or any(type(k) is not int for k in itos) or sorted(itos) != list(range(V)) or any(
            not isinstance(c, str) or len(c) != 1 for c in itos.values()):
        raise UserError(f"{path}: its 'itos' must map ids 0..V-1 to single characters (nanoGPT's character table)")
    vocab = "".join(itos[i] for i in range(V))
    _check_text_characters(path, vocab)
    stoi = meta.get("stoi")
    if len(set(vocab)) != V or (stoi is not None and stoi != {c: i for i, c in enumerate(vocab)}):
        raise UserError(f"{path}: its 'stoi' and 'itos' disagree (a character must have one id)")
    if meta.get("vocab_size", V) != V:
        raise UserError(f"{path}: vocab_size {_shown(meta.get('vocab_size'))} but 'itos' has {V} characters")
    return CharTokenizer(vocab, source=str(path))


def from_record(record: dict | None, vocab: str | None, vocab_size: int) -> Any:
    """The tokenizer a checkpoint's metadata describes (`record`; older checkpoints: `vocab`, None for ids)."""
    if record is None:
        return CharTokenizer(vocab) if isinstance(vocab, str) else TokenIds(vocab_size)
    kind = record.get("kind")
    if kind in ("chars", "meta.pkl"):
        return CharTokenizer(record["vocab"], record.get("source", ""))
    if kind == "ids":
        return TokenIds(vocab_size)
    from bigram_jax.corpus import bpe

    return bpe.from_record(record)


def _without_library(record: dict | None, vocab: str | None) -> Any:
    """The recorded tokenizer if it needs no library (characters, a meta.pkl's table, raw ids); else None."""
    return from_record(record, vocab, 1) if record is None or record.get("kind") in ("chars", "meta.pkl", "ids") \
        else None


def record_identity(record: dict | None, vocab: str | None) -> str:
    """The identity of the tokenizer a checkpoint records, without loading any library."""
    tok = _without_library(record, vocab)
    return tok.identity if tok is not None else record["identity"]


def describe_record(record: dict | None, vocab: str | None) -> str:
    """What a checkpoint's tokenizer is, in words, without loading any library."""
    tok = _without_library(record, vocab)
    if tok is not None:
        return tok.describe()
    library = "tiktoken" if record.get("kind") == "tiktoken" else "Hugging Face tokenizers"
    return f"{record.get('name') or record.get('source')} ({library})"


def named(spec: str) -> Any:
    """The tokenizer --tokenizer names: a meta.pkl path, a tokenizer.json path, or a tiktoken encoding's name."""
    if spec.endswith(".pkl"):
        return read_meta_pkl(Path(spec))
    from bigram_jax.corpus import bpe

    if spec.endswith(".json"):
        return bpe.hugging_face(Path(spec))
    if "/" in spec or Path(spec).exists():
        raise UserError(f"--tokenizer {spec}: a file must be a meta.pkl (.pkl) or a tokenizer.json (.json)")
    return bpe.tiktoken_named(spec)
