"""Byte-pair-encoding tokenizers through their own libraries (the optional extra '.[tokenizers]', imported only
here and only when a run names one): tiktoken's encodings by name, and Hugging Face tokenizer.json files.

Both encode text without special tokens (a corpus's '<|endoftext|>' is text like any other) and expose the
interface of tokenizers.py. A checkpoint records a tokenizer.json whole, and a tiktoken encoding by name and the
digest of its BPE table (tiktoken downloads that table once and caches it: TIKTOKEN_CACHE_DIR).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from bigram_jax.errors import UserError, first_line
from bigram_jax.store.files import check_regular

EXTRA = "pip install -e '.[tokenizers]'"  # tiktoken and tokenizers: an optional extra, imported when used


def _library(name: str) -> Any:
    """The tokenizer library `name`, or one line saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(f"this tokenizer needs the {name} package, an optional extra: {EXTRA}") from None


@dataclasses.dataclass(frozen=True, eq=False)
class Tiktoken:
    """A tiktoken encoding (gpt2, r50k_base, p50k_base, cl100k_base, o200k_base, or a plugin's)."""

    name: str
    enc: Any  # tiktoken.Encoding
    text = True

    @property
    def vocab_size(self) -> int:
        return self.enc.n_vocab

    @functools.cached_property
    def identity(self) -> str:
        """sha256 of the name, the split pattern, the special tokens and every token's bytes (its BPE table)."""
        h = hashlib.sha256(f"{self.name}\n{getattr(self.enc, '_pat_str', '')}\n".encode())
        h.update(repr(sorted((t, self.enc.encode_single_token(t)) for t in self.enc.special_tokens_set)).encode())
        for i in range(self.enc.n_vocab):
            token = self._token_bytes(i) or b""  # (an unused id: no bytes)
            h.update(len(token).to_bytes(4, "little") + token)
        return h.hexdigest()

    def record(self) -> dict:
        return {"kind": "tiktoken", "name": self.name, "identity": self.identity}

    def describe(self) -> str:
        return f"{self.name} (tiktoken)"

    def encode(self, s: str) -> np.ndarray:
        return np.asarray(self.enc.encode_ordinary(s), np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        out = self.enc.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
        return [np.asarray(ids, np.int32) for ids in out]

    def decode(self, ids) -> str:
        """Ids -> text; an id the encoding leaves unused (cl100k_base and o200k_base have some, and a table
        samples them) and bytes cut mid-character show as U+FFFD."""
        out = bytearray()
        for i in np.asarray(ids).reshape(-1).tolist():
            token = self._token_bytes(i)
            out += "\ufffd".encode() if token is None else token
        return out.decode("utf-8", errors="replace")

    def _token_bytes(self, i: int) -> bytes | None:
        """The bytes of token `i`; None for an id the encoding leaves unused."""
        try:
            return self.enc.decode_single_token_bytes(i)
        except KeyError:
            return None


@dataclasses.dataclass(frozen=True, eq=False)
class HuggingFace:
    """A Hugging Face tokenizer, from its tokenizer.json."""

    json_text: str  # the file's content: the checkpoint keeps it whole
    source: str  # the file it was read from (for the logs)
    tok: Any  # tokenizers.Tokenizer
    text = True

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    @functools.cached_property
    def identity(self) -> str:
        return hashlib.sha256(self.json_text.encode()).hexdigest()

    def record(self) -> dict:
        return {"kind": "tokenizer.json", "json": self.json_text, "source": self.source, "identity": self.identity}

    def describe(self) -> str:
        return f"{self.source} (Hugging Face tokenizers)"

    def encode(self, s: str) -> np.ndarray:
        return np.asarray(self.tok.encode(s, add_special_tokens=False).ids, np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        batch = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)  # (no offsets: faster, same ids)
        return [np.asarray(e.ids, np.int32) for e in batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tok.decode(np.asarray(ids).reshape(-1).tolist(), skip_special_tokens=False)


def tiktoken_named(name: str) -> Tiktoken:
    """tiktoken's encoding `name`; offline and not cached yet, one line saying how to provide its BPE file."""
    tiktoken = _library("tiktoken")
    names = tiktoken.list_encoding_names()
    if name not in names:
        raise UserError(f"--tokenizer {name!r} is neither a file (meta.pkl, tokenizer.json) nor a tiktoken "
                        f"encoding ({', '.join(sorted(names))})")
    try:
        return Tiktoken(name, tiktoken.get_encoding(name))
    except Exception as e:  # noqa: BLE001  (requests, blobfile and tiktoken raise many types when offline)
        raise UserError(f"tiktoken cannot load {name!r} ({first_line(e)}): it downloads its BPE file on first "
                        "use; offline, run it once where it can download, then copy that cache folder here and "
                        "set TIKTOKEN_CACHE_DIR to it") from None


def _hugging_face_from(json_text: str, source: str) -> HuggingFace:
    tokenizers = _library("tokenizers")
    try:
        return HuggingFace(json_text, source, tokenizers.Tokenizer.from_str(json_text))
    except Exception as e:  # noqa: BLE001  (tokenizers raises its own exception types for a bad file)
        raise UserError(f"{source} is not a tokenizer.json that tokenizers can read ({first_line(e)})") from None


def hugging_face(path: Path) -> HuggingFace:
    """A tokenizer.json file, read whole (the checkpoint will keep it)."""
    check_regular(path, "tokenizer file")
    try:
        return _hugging_face_from(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read tokenizer file {path} ({first_line(e)})") from None


def from_record(record: dict) -> Tiktoken | HuggingFace:
    """The BPE tokenizer a checkpoint recorded, checked to be the one it was trained with."""
    if record.get("kind") == "tokenizer.json":
        tok: Tiktoken | HuggingFace = _hugging_face_from(record["json"], record.get("source", "tokenizer.json"))
    elif record.get("kind") == "tiktoken":
        tok = tiktoken_named(record["name"])
    else:
        raise UserError(f"the checkpoint records a tokenizer of an unknown kind ({record.get('kind')!r})")
    if tok.identity != record.get("identity"):
        raise UserError(f"the tokenizer {tok.describe()} here is not the one the checkpoint was trained with "
                        f"(digest {tok.identity[:12]}... vs {str(record.get('identity'))[:12]}...)")
    return tok
