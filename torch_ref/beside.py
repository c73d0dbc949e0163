"""The tokenizer beside a .pt: what export_torch.py writes next to a table and import_torch.py reads back, in
one place (so what a table's ids mean travels with it, and a change of the record, a compact id map, is made here).

Beside X.pt:
    X.bigram_jax.json   the project's record: the table's V and the checkpoint's tokenizer record, as it was
    X.meta.pkl          a character table, as nanoGPT's prepare.py writes one ({'vocab_size', 'itos', 'stoi'})
    X.tokenizer.json    a Hugging Face tokenizer, the file itself (tokenizers.Tokenizer.from_file reads it)
    X.tiktoken.txt      a tiktoken encoding's name (tiktoken.get_encoding(name))
    X.id_map.pt         a compact table's map (--compact-vocab), a torch LongTensor: token_id = ids[row]

Each file is written whole (a temporary name, then a rename), the record last: where it is, the rest is complete.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

from bigram_jax.corpus.compact import FULL_KEY, MAP_KEY
from bigram_jax.corpus.token_file import TOKEN_SUFFIXES
from bigram_jax.corpus.tokenizers import describe_record, record_identity
from bigram_jax.errors import UserError, first_line
from bigram_jax.store.files import check_nesting, read_checked

RECORD, META_PKL, TOKENIZER_JSON, TIKTOKEN, ID_MAP = (".bigram_jax.json", ".meta.pkl", ".tokenizer.json",
                                                      ".tiktoken.txt", ".id_map.pt")
SUFFIXES = (RECORD, META_PKL, TOKENIZER_JSON, TIKTOKEN, ID_MAP)
RECORD_MAX = 256 << 20  # bytes: a record holds a tokenizer.json whole (GPT-2's is 1.4 MB; the largest, tens of MB)
RECORD_DEPTH = 8  # containers: {'tokenizer': {'id_map': [...]}} is 3 deep
RECORD_VERSION = 1
KINDS = ("chars", "meta.pkl", "tokenizer.json", "tiktoken", "ids")


def path_of(pt: Path | str, suffix: str) -> Path:
    """The file beside `pt` with `suffix` (X.pt -> X.meta.pkl)."""
    return Path(pt).with_suffix(suffix)


def split_map(record: dict) -> tuple[dict, list | None]:
    """(the base tokenizer's record, the compact id map or None): a compact table's record is its base tokenizer's
    plus the map (corpus/compact.py); the ecosystem's files are the base tokenizer's."""
    if MAP_KEY not in record:
        return record, None
    return {k: v for k, v in record.items() if k not in (MAP_KEY, FULL_KEY)}, record[MAP_KEY]


def described(record: dict) -> str:
    """A tokenizer record in words (a compact one: how many of its ids the table has)."""
    base, id_map = split_map(record)
    return describe_record(base, None) + ("" if id_map is None else f", {len(id_map):,} of its ids (compact)")


def _ecosystem(base: dict) -> dict[str, bytes]:
    """The base tokenizer in its own ecosystem's form, by suffix (raw ids: none)."""
    kind = base.get("kind")
    if kind in ("chars", "meta.pkl"):
        vocab = base["vocab"]
        meta = {"vocab_size": len(vocab), "itos": dict(enumerate(vocab)), "stoi": {c: i for i, c in enumerate(vocab)}}
        return {META_PKL: pickle.dumps(meta)}
    if kind == "tokenizer.json":
        return {TOKENIZER_JSON: base["json"].encode("utf-8")}  # the text the checkpoint kept, byte for byte
    if kind == "tiktoken":
        return {TIKTOKEN: f"{base['name']}\n".encode()}
    return {}


def _id_map_bytes(id_map: list) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(torch.tensor(id_map, dtype=torch.long), buf)
    return buf.getvalue()


def contents(record: dict, vocab_size: int) -> dict[str, bytes]:
    """Every file beside the .pt, by suffix, made before anything is written (a record that cannot be written out
    is refused with nothing on disk). The record comes last."""
    try:
        base, id_map = split_map(record)
        out = _ecosystem(base)
        if id_map is not None:
            out[ID_MAP] = _id_map_bytes(id_map)
        out[RECORD] = (json.dumps({"bigram_jax_tokenizer": RECORD_VERSION, "vocab_size": vocab_size,
                                   "tokenizer": record}) + "\n").encode()  # (\\u escapes: any character)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # (UnicodeEncodeError is a ValueError)
        raise UserError(f"the checkpoint's tokenizer record cannot be written out ({first_line(e)})") from None
    return out


def check_free(pt: Path) -> None:
    """Refuse to export where the .pt or any file beside it exists (a link too, dangling or not: nothing is
    written through one; and a stale file beside a new table would be read as its tokenizer)."""
    for path in (pt, *(path_of(pt, s) for s in SUFFIXES)):
        if os.path.lexists(path):
            raise UserError(f"{path} exists; choose another --out (nothing was changed)")


def write(pt: Path, files: dict[str, bytes], written: list[Path]) -> None:
    """Write `files` beside `pt`, each whole; each path written is appended to `written` (for the caller to
    remove if a later one fails)."""
    for suffix, data in files.items():
        path = path_of(pt, suffix)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        written.append(path)


@dataclasses.dataclass(frozen=True)
class Beside:
    """The tokenizer record found beside a .pt."""

    pt: Path  # the table's file
    path: Path  # the file the record was read from
    vocab_size: int  # the table's V
    record: dict  # the checkpoint's tokenizer record, as it was
    legacy: bool = False  # an older export's X.tokenizer.json: the record alone, no ecosystem file beside

    @property
    def base(self) -> dict:
        return split_map(self.record)[0]

    @property
    def id_map(self) -> list | None:
        return split_map(self.record)[1]

    def describe(self) -> str:
        return describe_record(self.base, None)

    def overrides(self, data_is_text: bool, tokenizer: str) -> dict[str, Any]:
        """The settings that read --data as the table's ids: the tokenizer beside the .pt (unless --tokenizer names
        one; then it is checked against this), the compact map's switch, the table's V."""
        kind, out = self.base["kind"], {}
        own_chars = kind == "chars" and data_is_text  # a text's own sorted characters: compared after reading
        if tokenizer == "auto" and not own_chars and kind != "ids":
            out["tokenizer"] = self.base["name"] if kind == "tiktoken" else str(self.ecosystem_path())
            if self.legacy and kind != "tiktoken":
                raise UserError(f"{self.path} was written by an older export_torch.py, without the tokenizer's "
                                f"own file: pass --tokenizer (checked against it), or export the table again")
        if self.id_map is not None:
            out["compact_vocab"] = True
        elif not own_chars:
            out["vocab_size"] = self.vocab_size  # (a table padded past its tokenizer's vocabulary)
        return out

    def ecosystem_path(self) -> Path:
        """The base tokenizer's file beside the .pt (meta.pkl or tokenizer.json), read as --tokenizer is."""
        return path_of(self.pt, META_PKL if self.base["kind"] in ("chars", "meta.pkl") else TOKENIZER_JSON)

    def check(self, corpus: Any, data: str, explicit: bool) -> None:
        """Refuse (one line) a corpus whose ids are not the table's: another tokenizer, other compact ids, another
        V. Token-id data keeps its ids whatever decodes them (as --resume: 'ids' on either side is no mismatch)."""
        pt, ours, theirs = self.pt, record_identity(self.base, None), corpus.tokenizer.identity
        token_data = Path(corpus.path).suffix in TOKEN_SUFFIXES
        if ours != theirs and not (token_data and "ids" in (ours, theirs)):
            hint = f"; --tokenizer {self.ecosystem_path()} reads it with the table's characters" \
                if self.base["kind"] == "chars" else \
                "; leave out --tokenizer to read it with the one beside the .pt" if explicit else \
                f"; the tokenizer file beside {pt} was changed since the export"
            raise UserError(f"{pt}'s ids are the tokenizer {self.describe()} (digest {ours[:12]}..., recorded in "
                            f"{self.path}), but --data {data} was read with {corpus.tokenizer.describe()} "
                            f"(digest {theirs[:12]}...): its ids would mean other tokens{hint}")
        rows = getattr(corpus.tokenizer, "ids", None)
        if self.id_map is not None and (rows is None or rows.tolist() != self.id_map):
            raise UserError(f"{pt} is a compact table of {len(self.id_map):,} ids, but --data {data} uses "
                            f"{'its whole vocabulary' if rows is None else f'{len(rows):,} other ones'}: "
                            "not the corpus the table was trained on")
        if corpus.vocab_size != self.vocab_size:
            raise UserError(f"{pt}'s table is {self.vocab_size}x{self.vocab_size} (recorded in {self.path}), but "
                            f"--data {data} has a vocabulary of {corpus.vocab_size}")


def read(pt: Path) -> Beside | None:
    """The tokenizer record beside `pt`, checked; None where there is none (a .pt from elsewhere). Also the
    single X.tokenizer.json that exports before this one wrote ({'vocab_size', 'tokenizer'})."""
    path = path_of(pt, RECORD)
    if not os.path.lexists(path):
        legacy = path_of(pt, TOKENIZER_JSON)
        found = _record_file(legacy) if os.path.lexists(legacy) else None
        if found is None or set(found) != {"vocab_size", "tokenizer"}:  # (a real tokenizer.json: not ours)
            return None
        return _checked(found, Beside(Path(pt), legacy, 0, {}, legacy=True))
    found = _record_file(path)
    if found is None or found.get("bigram_jax_tokenizer") != RECORD_VERSION:
        raise UserError(f"{path} is not a tokenizer record of this version of bigram-jax")
    return _checked(found, Beside(Path(pt), path, 0, {}))


def _record_file(path: Path) -> dict | None:
    """The JSON object in `path` (None: another kind of JSON); a file that is no JSON is one line."""
    raw = read_checked(path, "tokenizer record", RECORD_MAX)
    try:
        d = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # (UnicodeDecodeError is a ValueError)
        raise UserError(f"{path} is not a tokenizer record (JSON: {first_line(e)})") from None
    if not isinstance(d, dict):
        return None
    return d


def _checked(d: dict, where: Beside) -> Beside:
    """The record's fields, checked to be what an export writes (a broken one is one line, never a KeyError)."""
    check_nesting(d, RECORD_DEPTH, str(where.path))
    V, record = d.get("vocab_size"), d.get("tokenizer")
    bad = f"{where.path} is a malformed tokenizer record"
    if type(V) is not int or V < 1 or not isinstance(record, dict):
        raise UserError(f"{bad} (vocab_size, tokenizer)")
    found = dataclasses.replace(where, vocab_size=V, record=record)
    if found.base.get("kind") not in KINDS:
        raise UserError(f"{bad} (a tokenizer of an unknown kind)")
    id_map = found.id_map
    if id_map is not None and not (isinstance(id_map, list) and len(id_map) == V and
                                   all(type(i) is int for i in id_map)):
        raise UserError(f"{bad} (its compact id map is not {V} integers)")
    try:
        record_identity(found.base, None), found.describe()  # what check() and the messages will need
    except (KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{bad} ({first_line(e)})") from None
    return found
