"""Byte-pair-encoding tokenizers through their own libraries (the optional extra '.[tokenizers]', imported only
here and only when a run names one): tiktoken's encodings by name, and Hugging Face tokenizer.json files.

Both encode text without special tokens (a corpus's '<|endoftext|>' is text like any other) and expose the
interface of tokenizers.py. A tokenizer is a pure text -> ids map here: a tokenizer.json's truncation, padding and
post-processor are switched off, for a corpus and for prompts alike. Each also says where a text may be cut into
pieces encoded one after the other with the whole text's ids (`cut_rules`, proved from what the tokenizer is, below),
the largest id it can emit (the token file's dtype), and which characters it cannot encode. A checkpoint records a tokenizer.json whole, and a tiktoken encoding by name and the
digest of its BPE table (tiktoken downloads that table once and caches it: TIKTOKEN_CACHE_DIR).
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import importlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bigram_jax.errors import UserError, first_line
from bigram_jax.store.files import read_checked

EXTRA = "pip install -e '.[tokenizers]'"  # tiktoken and tokenizers: an optional extra, imported when used
TOKENIZER_JSON_MAX = 256 << 20  # bytes: the largest tokenizer.json files (~100k merges) are ~10-20 MB


def _library(name: str) -> Any:
    """The tokenizer library `name`, or one line saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(f"this tokenizer needs the {name} package, an optional extra: {EXTRA}") from None


# Where text_file.py may cut a text into pieces that are encoded one after the other, their ids concatenated:
SPACE = "space"  # before a ' ' (U+0020) whose previous character is not whitespace
LINE = "line"  # after a '\n' whose previous character is not whitespace, before one that is neither whitespace nor '/'
BOTH, NONE = frozenset({SPACE, LINE}), frozenset()

# tiktoken's own split patterns (tiktoken_ext/openai_public.py, 0.14): gpt2, r50k_base, p50k_base; cl100k_base;
# o200k_base. Why SPACE and LINE cuts leave their ids as the whole text's: tiktoken encodes each regex match alone,
# matched left to right, and none of these patterns looks behind or anchors at the start (`$` is the text's end,
# which a cut piece shares with the whole), so the matches after a position where one ends are those of the rest
# alone. At a SPACE cut the match holding the previous character (letters, digits, other symbols, a contraction:
# none takes a space after its first character) ends there, and the matches before it read nothing past the
# cut but that space, which ends each of their classes as the end of a text does (no whitespace run reaches the
# cut, so `\s++$` and `\s+(?!\S)` match the same). At a LINE cut the line break is a match of its own or ends a
# run of symbols (`[\r\n]*` after them: o200k's `[\r\n/]*` is why the next character must not be '/'), and at the
# end of the cut piece the same '\n' is matched (by `\s++$`: the same bytes, so the same ids).
_R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
_CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
               r"""\s*[\r\n]|\s+(?!\S)|\s""")
_O200K_PAT = (
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
    r"""\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
_TIKTOKEN_PATTERNS = {_R50K_PAT, _CL100K_PAT, _O200K_PAT}

# tokenizer.json Split pre-tokenizers (behavior Isolated: each match a piece) with GPT-2's, Llama 3's and Qwen2's
# patterns: every character is in a match, and the proof above holds of each (theirs is cl100k's without the
# possessive forms; Qwen2's takes digits one at a time)
_SPLIT_PATTERNS = {
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}

# Hugging Face pre-tokenizers whose pieces never hold whitespace: a cut at whitespace is between pieces
_WHITESPACE_SPLITTERS = {"Whitespace", "WhitespaceSplit", "BertPreTokenizer"}
_PRE_TOKENIZERS = _WHITESPACE_SPLITTERS | {"ByteLevel", "Metaspace", "Split", "Digits", "Punctuation",
                                           "UnicodeScripts", "CharDelimiterSplit", "Sequence"}


def _pre_tokenizer_rules(pt: dict | None) -> tuple[frozenset, str]:
    """(the cuts a tokenizer.json's pre-tokenizer keeps between pieces, why none when none). ByteLevel's regex is
    GPT-2's (the proof above); its prefix space is added only to a text not starting with a space, as a piece cut
    at a SPACE starts, not a LINE cut's. Metaspace turns spaces into its replacement and starts a piece at each
    (a SPACE cut's piece starts with one, so nothing is prepended). Members after a Sequence's first only split
    the same pieces again, unless one depends on where its piece lies in the text (Metaspace 'first')."""
    kind = pt.get("type") if isinstance(pt, dict) else None
    if kind is None:
        return NONE, "no pre-tokenizer (the model sees the whole text as one piece)"
    if kind in _WHITESPACE_SPLITTERS:
        return BOTH, ""
    if kind == "ByteLevel":
        if not pt.get("use_regex", True):
            return NONE, "a ByteLevel pre-tokenizer without its split regex (the text is one piece)"
        return (frozenset({SPACE}) if pt.get("add_prefix_space") else BOTH), ""
    if kind == "Metaspace":
        return (frozenset({SPACE}), "") if pt.get("split", True) else (NONE, "a Metaspace pre-tokenizer without split")
    if kind == "Split" and (pt.get("pattern") or {}).get("Regex") in _SPLIT_PATTERNS and \
            pt.get("behavior") == "Isolated" and not pt.get("invert"):
        return BOTH, ""
    if kind == "CharDelimiterSplit" and pt.get("delimiter") == " ":
        return frozenset({SPACE}), ""
    if kind == "Sequence" and pt.get("pretokenizers"):
        first, *later = pt["pretokenizers"]
        for p in later:
            if not isinstance(p, dict) or p.get("type") not in _PRE_TOKENIZERS or (
                    p.get("type") == "Metaspace" and p.get("prepend_scheme") == "first"):
                return NONE, f"a {p.get('type') if isinstance(p, dict) else p} pre-tokenizer inside a Sequence"
        return _pre_tokenizer_rules(first)
    return NONE, f"a {kind} pre-tokenizer"


def _normalizer_rules(n: dict | None, splitter: bool) -> tuple[frozenset, str]:
    """(the cuts a normalizer keeps, why none). NFC, NFD and lowercasing map ' ' to ' ' and any other character
    to text with no whitespace at either end, one character at a time (the canonical forms reorder and compose
    only after a starter other than ' '); NFKC and NFKD begin 50 characters with a space (U+00A8 -> ' \u0308'),
    which would end a LINE cut's line break's match elsewhere (tests/corpus/test_cut_safety.py checks every code
    point). With a pre-tokenizer that splits at and drops whitespace (`splitter`), any normalizer of one character
    at a time keeps the cuts: Bert's, StripAccents, Strip (of the spaces at a piece's ends)."""
    kind = n.get("type") if isinstance(n, dict) else None
    if kind is None or kind in ("NFC", "NFD", "Lowercase"):
        return BOTH, ""
    if kind in ("NFKC", "NFKD"):
        return (BOTH if splitter else frozenset({SPACE})), ""
    if splitter and kind in ("BertNormalizer", "StripAccents", "Strip"):
        return BOTH, ""
    if kind == "Sequence":
        rules, why = BOTH, ""
        for member in n.get("normalizers") or []:
            more, why_not = _normalizer_rules(member, splitter)
            rules, why = rules & more, why or why_not
        return rules, why
    return NONE, f"a {kind} normalizer"


def _added_token_rules(added: list) -> tuple[frozenset, str]:
    """(the cuts added tokens keep, why none): the text is split at them first. One holding whitespace could span
    a cut; one that strips the whitespace on its right (rstrip) would take a SPACE cut's space, on its left
    (lstrip) a LINE cut's line break."""
    rules = BOTH
    for t in added or []:
        content = str(t.get("content", ""))
        if any(ch.isspace() for ch in content):
            return NONE, f"the added token {content!r} holds whitespace"
        rules -= ({SPACE} if t.get("rstrip") else set()) | ({LINE} if t.get("lstrip") else set())
    return rules, "" if rules else "added tokens that strip whitespace on both sides"


def hugging_face_rules(spec: dict) -> tuple[frozenset, str]:
    """(the cuts of text_file.py that leave a tokenizer.json's ids the whole text's, why none): each model encodes
    each piece of its pre-tokenizer alone, so the cuts its pre-tokenizer, normalizer and added tokens all keep."""
    model = (spec.get("model") or {}).get("type")
    if model not in ("BPE", "WordPiece", "WordLevel", "Unigram"):
        return NONE, f"a {model} model"
    pre, why = _pre_tokenizer_rules(spec.get("pre_tokenizer"))
    splitter = isinstance(spec.get("pre_tokenizer"), dict) and spec["pre_tokenizer"].get("type") in \
        _WHITESPACE_SPLITTERS
    norm, why_norm = _normalizer_rules(spec.get("normalizer"), splitter)
    added, why_added = _added_token_rules(spec.get("added_tokens"))
    rules = pre & norm & added
    return rules, "" if rules else (why or why_norm or why_added or "its parts keep no common cut")


_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")  # a byte-fallback token


def lacking(tok: Any, chars: list[str], where: str) -> UserError:
    """The refusal of a tokenizer that has no token for `chars` (it would drop them from `where`)."""
    shown = ", ".join(repr(ch) for ch in chars[:20]) + (" ..." if len(chars) > 20 else "")
    return UserError(f"the tokenizer {tok.describe()} has no token for {len(chars)} character(s) of {where} and no "
                     f"unknown token or byte fallback (it would drop them): {shown}")


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

    @property
    def max_id(self) -> int:
        """The largest id an encoding can hold (its token file's dtype follows it)."""
        return self.enc.max_token_value

    @functools.cached_property
    def cut_rules(self) -> tuple[frozenset, str]:
        """(where a text may be cut, why nowhere): tiktoken's own split patterns (above), else nowhere. (The pattern
        is tiktoken's private `_pat_str`: the Encoding has no public name for it.)"""
        if getattr(self.enc, "_pat_str", None) in _TIKTOKEN_PATTERNS:
            return BOTH, ""
        return NONE, "its split pattern is none of tiktoken's own (gpt2, cl100k_base, o200k_base)"

    checks_characters = False  # byte-level: every text has tokens

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
    """A Hugging Face tokenizer, from its tokenizer.json: a pure text -> ids map (no truncation, padding or
    post-processing, whatever the file sets)."""

    json_text: str  # the file's content: the checkpoint keeps it whole
    source: str  # the file it was read from (for the logs)
    tok: Any  # tokenizers.Tokenizer
    text = True

    @functools.cached_property
    def spec(self) -> dict:
        return json.loads(self.json_text)

    @functools.cached_property
    def max_id(self) -> int:
        """The largest id the tokenizer can emit: its vocabulary's ids need not be 0..n-1."""
        return max(self.tok.get_vocab(with_added_tokens=True).values(), default=0)

    @property
    def vocab_size(self) -> int:
        return self.max_id + 1

    @functools.cached_property
    def identity(self) -> str:
        return hashlib.sha256(self.json_text.encode()).hexdigest()

    @functools.cached_property
    def cut_rules(self) -> tuple[frozenset, str]:
        return hugging_face_rules(self.spec)

    @functools.cached_property
    def _unknown(self) -> tuple[int | None, bool]:
        """(the unknown token's id, whether the model falls back to byte tokens)."""
        model = self.spec.get("model") or {}
        unk = model.get("unk_id") if model.get("type") == "Unigram" else (
            self.tok.token_to_id(model["unk_token"]) if isinstance(model.get("unk_token"), str) else None)
        return unk, bool(model.get("byte_fallback"))

    @functools.cached_property
    def checks_characters(self) -> bool:
        """Whether some character may lack a token (then the text's characters are checked). A WordLevel model
        knows words, not characters (an unknown word with no unknown token is an error of the library's); a
        byte-level BPE with all 256 byte symbols has a token for every character."""
        if (self.spec.get("model") or {}).get("type") == "WordLevel":
            return False
        return not ("ByteLevel" in json.dumps(self.spec.get("pre_tokenizer")) and set(
            _library("tokenizers").pre_tokenizers.ByteLevel.alphabet()) <= set(self.tok.get_vocab()))

    @property
    def unknown_name(self) -> str:
        unk, fallback = self._unknown
        return "byte fallback tokens" if fallback else f"the unknown token {self.tok.id_to_token(unk)!r}"

    def unencodable(self, chars: list[str]) -> tuple[list[str], list[str]]:
        """(the characters of `chars` the tokenizer would drop, those it encodes as its unknown token or bytes),
        each encoded alone: dropped when its model gives no ids for a piece its pre-tokenizer keeps."""
        dropped, unknown = [], []
        unk, fallback = self._unknown
        for ch in chars:
            try:
                e = self.tok.encode(ch, add_special_tokens=False)
            except Exception:  # noqa: BLE001  (an unknown character with no unknown id: the model's error)
                dropped.append(ch)
                continue
            if not e.ids:
                if self._kept(ch):
                    dropped.append(ch)
            elif unk in e.ids or (fallback and any(_BYTE_TOKEN.fullmatch(t) for t in e.tokens)):
                unknown.append(ch)
        return dropped, unknown

    def _kept(self, ch: str) -> bool:
        """Whether the normalizer and pre-tokenizer leave something of `ch` for the model (whitespace, say, is
        dropped by some pre-tokenizers by design: that is no lack)."""
        n = self.tok.normalizer.normalize_str(ch) if self.tok.normalizer is not None else ch
        return bool(n) and (self.tok.pre_tokenizer is None or bool(self.tok.pre_tokenizer.pre_tokenize_str(n)))

    def record(self) -> dict:
        return {"kind": "tokenizer.json", "json": self.json_text, "source": self.source, "identity": self.identity}

    def describe(self) -> str:
        return f"{self.source} (Hugging Face tokenizers)"

    def encode(self, s: str) -> np.ndarray:
        """A prompt's ids; a character the tokenizer would drop, or text it cannot take, is one line."""
        if self.checks_characters:
            dropped, _ = self.unencodable(sorted(set(s)))
            if dropped:
                raise lacking(self, dropped, "the text")
        return self.encode_batch([s])[0]

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        batch = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)  # (no offsets: faster, same ids)
        try:
            out = batch(texts, add_special_tokens=False)
        except Exception as e:  # noqa: BLE001  (tokenizers' own types: a word it does not know, a lone surrogate)
            raise UserError(f"the tokenizer {self.describe()} cannot encode the text ({first_line(e)})") from None
        return [np.asarray(e.ids, np.int32) for e in out]

    def decode(self, ids) -> str:
        return self.tok.decode(np.asarray(ids).reshape(-1).tolist(), skip_special_tokens=False)


# gpt2 and r50k_base are one encoding (the same ranks, pattern and end-of-text id) from other files: gpt2's are
# GPT-2's own vocab.bpe and encoder.json, r50k_base's one .tiktoken file (tiktoken_ext/openai_public.py)
_GPT2_FILES = ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
               "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json")
_R50K_FILE = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
_R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"  # tiktoken's expected_hash


def _tiktoken_cached(url: str) -> Path | None:
    """Where tiktoken's cache holds the file at `url`, if it does: tiktoken.load.read_file_cached keeps it as
    sha1(url) in TIKTOKEN_CACHE_DIR, else DATA_GYM_CACHE_DIR, else <tmp>/data-gym-cache."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR", os.path.join(
        tempfile.gettempdir(), "data-gym-cache")))
    path = Path(folder) / hashlib.sha1(url.encode()).hexdigest() if folder else None
    return path if path is not None and path.is_file() else None


def _gpt2_from_r50k(tiktoken: Any) -> Any:
    """gpt2 built from r50k_base's cached file (its sha256 checked), when gpt2's own files are not cached; else
    None. The .tiktoken format: a line per token, its bytes in base64 and its rank (tiktoken.load_tiktoken_bpe)."""
    path = _tiktoken_cached(_R50K_FILE)
    if path is None or all(_tiktoken_cached(u) for u in _GPT2_FILES):
        return None
    try:
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != _R50K_SHA256:
            return None
        ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in raw.splitlines() if line)}
    except (OSError, ValueError):
        return None
    print(f"note: gpt2's files are not in tiktoken's cache; using r50k_base's ({path}, sha256 checked): the same "
          "ranks, split pattern and end-of-text id", file=sys.stderr, flush=True)
    return tiktoken.Encoding(name="gpt2", pat_str=_R50K_PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def _words(text: str, limit: int = 160) -> str:
    """`text` cut to at most `limit` characters at a space, never mid-word."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def tiktoken_named(name: str) -> Tiktoken:
    """tiktoken's encoding `name`; offline and not cached yet, one line saying how to provide its BPE file."""
    tiktoken = _library("tiktoken")
    names = tiktoken.list_encoding_names()
    if name not in names:
        raise UserError(f"--tokenizer {name!r} is neither a file (meta.pkl, tokenizer.json) nor a tiktoken "
                        f"encoding ({', '.join(sorted(names))})")
    enc = _gpt2_from_r50k(tiktoken) if name == "gpt2" else None
    if enc is not None:
        return Tiktoken(name, enc)
    try:
        return Tiktoken(name, tiktoken.get_encoding(name))
    except Exception as e:  # noqa: BLE001  (requests, blobfile and tiktoken raise many types when offline)
        why = str(e).strip().splitlines()[0] if str(e).strip() else ""
        also = " (for gpt2, r50k_base's file serves too: the same encoding)" if name == "gpt2" else ""
        raise UserError(f"tiktoken cannot load {name!r} ({type(e).__name__}: {_words(why)}): it downloads its BPE "
                        "file on first use; offline, run it once where it can download, then copy that cache "
                        f"folder here and set TIKTOKEN_CACHE_DIR to it{also}") from None


def _hugging_face_from(json_text: str, source: str) -> HuggingFace:
    tokenizers = _library("tokenizers")
    try:
        tok = tokenizers.Tokenizer.from_str(json_text)
        spec = json.loads(json_text)
    except Exception as e:  # noqa: BLE001  (tokenizers raises its own exception types for a bad file)
        raise UserError(f"{source} is not a tokenizer.json that tokenizers can read ({first_line(e)})") from None
    if ((spec.get("model") or {}).get("dropout") or 0) > 0:
        raise UserError(f"{source} sets BPE dropout: its ids for a text are drawn at random, not the text's")
    tok.no_truncation()  # a pure text -> ids map: the corpus and prompts are the text given, whole
    tok.no_padding()
    tok.post_processor = None
    return HuggingFace(json_text, source, tok)


def hugging_face(path: Path) -> HuggingFace:
    """A tokenizer.json file, read whole (the checkpoint will keep it)."""
    raw = read_checked(path, "tokenizer file", TOKENIZER_JSON_MAX)  # a FIFO, a device or a huge file: one line
    try:
        return _hugging_face_from(raw.decode("utf-8"), str(path))
    except UnicodeDecodeError as e:
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
