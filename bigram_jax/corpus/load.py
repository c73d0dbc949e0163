"""A run's corpus: text (character tokens) or token-id files, split, with each split's transition counts."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from bigram_jax import evaluate
from bigram_jax.config import Config
from bigram_jax.corpus import compact, files, text_file, token_file, tokenizers
from bigram_jax.corpus.token_file import TokenFile
from bigram_jax.corpus.tokenizers import CharTokenizer, TokenIds
from bigram_jax.counts import PairCounts
from bigram_jax.data import split
from bigram_jax.errors import UserError
from bigram_jax.model import table_of
from bigram_jax.store.files import open_checked


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A tokenized corpus, split, with each split's transition counts (sparse: any V fits).

    Token-id splits are views of a memory map: nothing is read until a batch or a count needs it.
    """

    path: Path
    sha256: str
    tokenizer: Any  # tokenizers.py: how text becomes these ids and back
    vocab_size: int  # V, the table's rows: the tokenizer's vocabulary, or more (--vocab-size pads it)
    train: np.ndarray  # (N_train,) ids: an int32 array (text) or a memory-mapped view (token files)
    val: np.ndarray
    train_counts: PairCounts
    val_counts: PairCounts
    train_file: TokenFile | None = None  # the file `train` maps, to detect a change during the run
    counts_s: float = 0.0  # seconds of the load spent counting transitions (or reading the counts' cache)
    val_path: Path | None = None  # a separate validation file
    found_beside: bool = False  # the tokenizer is the meta.pkl found beside the token-id data (nanoGPT's way)
    rows: np.ndarray | None = None  # --compact-vocab: the table row of each tokenizer id (-1: left out); None: the ids

    def exact_losses(self, params: dict, run: Callable | None = None) -> tuple[float, float]:
        """Exact (train, val) losses of `params` on this corpus, its counts put on the default device: for a table
        outside a job (restored or imported), which holds no counts of its own."""
        dtype = table_of(params).dtype
        return tuple(evaluate.exact(params, evaluate.device_counts(c, dtype, jnp.asarray), run)
                     for c in (self.train_counts, self.val_counts))

    def describe(self) -> str:
        """The run's `data:` line."""
        where = f"{self.path} + {self.val_path}" if self.val_path else str(self.path)
        base = self.tokenizer.base if self.rows is not None else self.tokenizer
        tok = "" if _own_chars(base) else \
            f"; tokenizer: {base.describe()}{', found beside --data' if self.found_beside else ''}"
        vocab = f"{self.vocab_size:,} of {len(self.rows):,} ids used" if self.rows is not None else \
            f"vocab {self.vocab_size}"
        return f"data: {where} ({len(self.train):,} train / {len(self.val):,} val tokens, {vocab}{tok})"


def _own_chars(tok: Any) -> bool:
    """Whether `tok` is the lecture's: the characters of the text itself (not a meta.pkl's table)."""
    return isinstance(tok, CharTokenizer) and not tok.source


def _check_own_chars(cfg: Config, V: int) -> None:
    """--vocab-size does not apply to a text read as its own characters (checked before any counting)."""
    if cfg.vocab_size not in (0, V):
        raise UserError(f"vocab_size applies to token-id data and named tokenizers; this text has "
                        f"{V} characters, not {cfg.vocab_size}")


def _counted(count: Callable[[], tuple[PairCounts, PairCounts]]) -> dict:
    """Corpus fields from `count()`: (train counts, val counts) and the seconds they took."""
    t = time.perf_counter()
    train_counts, val_counts = count()
    return {"train_counts": train_counts, "val_counts": val_counts, "counts_s": time.perf_counter() - t}


def _file_counts(tf: TokenFile, lo: int, hi: int, stride: int, V: int) -> PairCounts:
    """The split tokens[lo:hi]'s counts, streamed (or cached), as PairCounts over V."""
    ids, n = token_file.split_counts(tf, lo, hi, stride)
    if stride != V:  # counted with stride = largest id + 1; the run's V may be padded
        ids = (ids // stride) * V + ids % stride
    return PairCounts(ids.astype(np.int64), n.astype(np.float64), V)


def _table_size(cfg: Config, tok: Any, top: int) -> int:
    """V for ids up to `top` read with `tok` (None: raw ids): the tokenizer's vocabulary unless --vocab-size pads
    it; checked to hold every id."""
    if tok is not None and top >= tok.vocab_size:
        raise UserError(f"token id {top} in the data is beyond the vocabulary of the tokenizer {tok.describe()} "
                        f"({tok.vocab_size}): it is not this data's tokenizer")
    V = cfg.vocab_size or (tok.vocab_size if tok is not None else top + 1)
    if tok is not None and V < tok.vocab_size:
        raise UserError(f"vocab_size {V} is smaller than the tokenizer's vocabulary ({tok.vocab_size})")
    if top >= V:
        raise UserError(f"token id {top} in the data is out of range for vocab_size {V}")
    return V


def _encoded_text_corpus(cfg: Config, path: Path, st, tok: Any) -> Corpus:
    """A text read with a named tokenizer, or too big to decode at once: its cached token file (encoded now if
    new), split and counted."""
    if tok is not None and not isinstance(tok, CharTokenizer):
        # nanoGPT's split: the first train_frac of the characters and the rest, each encoded on its own
        tf, tok, sha, n_train = text_file.encode_to_cache(path, st, tok, train_frac=cfg.train_frac)
    else:  # characters: a split of the characters is a split of the tokens
        tf, tok, sha = text_file.encode_to_cache(path, st, tok)
        n_train = int(cfg.train_frac * len(tf.tokens))
    N = len(tf.tokens)
    if _own_chars(tok):  # every character of its vocabulary occurs in the text: no scan needed
        V = len(tok.vocab)
        top = V - 1
    else:
        top = token_file.scan(tf).max_id
        V = _table_size(cfg, tok, top)
    _check_lengths(cfg, n_train, N - n_train)
    if _own_chars(tok):
        _check_own_chars(cfg, V)
    return Corpus(path=path, sha256=sha, tokenizer=tok, vocab_size=V, train=tf.tokens[:n_train],
                  val=tf.tokens[n_train:], train_file=tf,
                  **_counted(lambda: (_file_counts(tf, 0, n_train, top + 1, V),
                                      _file_counts(tf, n_train, N, top + 1, V))))


def _token_corpus(cfg: Config, path: Path, tok: Any, found_beside: bool) -> Corpus:
    """Token-id data: one file split by train_frac, or separate train/val files; memory-mapped, counted once."""
    tf = token_file.open_tokens(path)
    vf = token_file.open_tokens(Path(cfg.val_data)) if cfg.val_data else None
    n_train = len(tf.tokens) if vf else int(cfg.train_frac * len(tf.tokens))
    _check_lengths(cfg, n_train, len(vf.tokens) if vf else len(tf.tokens) - n_train)
    scans = [token_file.scan(f) for f in (tf, vf) if f is not None]
    if min(s.min_id for s in scans) < 0:
        raise UserError(f"{path if scans[0].min_id < 0 else vf.path} holds a negative token id")
    top = max(s.max_id for s in scans)
    if top >= 2**31:
        raise UserError(f"the data holds token ids too large for int32 ({top})")
    V = _table_size(cfg, tok, top)
    sha = scans[0].sha256 if vf is None else hashlib.sha256(f"{scans[0].sha256}+{scans[1].sha256}".encode()).hexdigest()
    val_file, lo, hi = (vf, 0, len(vf.tokens)) if vf else (tf, n_train, len(tf.tokens))
    return Corpus(path=path, sha256=sha, tokenizer=tok if tok is not None else TokenIds(V), vocab_size=V,
                  train=tf.tokens[:n_train], val=val_file.tokens[lo:hi], train_file=tf,
                  val_path=vf.path if vf else None, found_beside=found_beside,
                  **_counted(lambda: (_file_counts(tf, 0, n_train, top + 1, V),
                                      _file_counts(val_file, lo, hi, top + 1, V))))


def _check_lengths(cfg: Config, n_train: int, n_val: int) -> None:
    """Each split long enough for a batch window and a transition."""
    if n_train <= cfg.block_size:
        raise UserError(f"corpus too short: the train split has {n_train} tokens, "
                        f"block_size {cfg.block_size} needs at least {cfg.block_size + 1}")
    if n_val < 2:
        raise UserError(f"corpus too short: the val split has {n_val} token(s), at least 2 are needed")


def _tokenizer(cfg: Config, path: Path, token_data: bool) -> tuple[Any, bool]:
    """(the tokenizer --tokenizer names, whether it was found beside the data). None: the text's own characters,
    or raw ids for token-id data."""
    spec = cfg.tokenizer
    if spec == "chars" and token_data:
        raise UserError("--tokenizer chars takes its vocabulary from a text; token-id data is read with its "
                        "meta.pkl, a tiktoken encoding, a tokenizer.json, or none")
    if spec == "none" and not token_data:
        raise UserError("--tokenizer none is for token-id data (.bin, .npy): a text is read as characters "
                        "(the default) or with a tokenizer")
    if spec in ("chars", "none") or (spec == "auto" and not token_data):
        return None, False
    if spec == "auto":  # nanoGPT's way: a data folder's meta.pkl is its tokenizer
        beside = path.parent / "meta.pkl"
        return (tokenizers.read_meta_pkl(beside), True) if beside.is_file() else (None, False)
    return tokenizers.named(spec), False


def load_corpus(cfg: Config) -> Corpus:
    """Read, tokenize and split the corpus; count every transition of each split once; with --compact-vocab,
    keep only the ids the splits use."""
    corpus = _load(cfg)
    return compacted(corpus) if cfg.compact_vocab else corpus


def compacted(corpus: Corpus) -> Corpus:
    """The corpus over the ids it uses: table rows 0..V_c-1 in the ids' order (compact.py)."""
    ids = compact.used_ids(corpus.train_counts, corpus.val_counts)
    rows, Vc = compact.row_map(ids, corpus.vocab_size), len(ids)
    return dataclasses.replace(
        corpus, tokenizer=compact.CompactTokenizer(corpus.tokenizer, ids), vocab_size=Vc, rows=rows,
        train=compact.RowView(corpus.train, rows), val=compact.RowView(corpus.val, rows),
        train_counts=compact.compact_counts(corpus.train_counts, rows, Vc),
        val_counts=compact.compact_counts(corpus.val_counts, rows, Vc))


def _load(cfg: Config) -> Corpus:
    """load_corpus over the tokenizer's whole vocabulary."""
    path = files.resolve_corpus(cfg.data)
    token_data = path.suffix in token_file.TOKEN_SUFFIXES
    tok, found_beside = _tokenizer(cfg, path, token_data)
    if token_data:
        return _token_corpus(cfg, path, tok, found_beside)
    if cfg.val_data:
        raise UserError("--val-data needs token-id --data (.bin or .npy); text data is split by --train-frac")
    with open_checked(path, "data file") as f:  # its stat, from the open file: a FIFO or a device refused at once
        st = os.fstat(f.fileno())
    if tok is not None or st.st_size > text_file.IN_MEMORY_MAX:
        return _encoded_text_corpus(cfg, path, st, tok)
    text, sha = files.load_text(path)
    tok = CharTokenizer.from_text(text)
    train, val = split(tok.encode(text), cfg.train_frac)
    _check_lengths(cfg, len(train), len(val))
    _check_own_chars(cfg, tok.vocab_size)
    return Corpus(path=path, sha256=sha, tokenizer=tok, vocab_size=tok.vocab_size, train=train, val=val,
                  **_counted(lambda: (PairCounts.of(train, tok.vocab_size), PairCounts.of(val, tok.vocab_size))))
