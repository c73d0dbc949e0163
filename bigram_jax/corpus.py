"""A run's corpus: text (character tokens) or token-id files, split, with each split's transition counts."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from bigram_jax import data as data_lib
from bigram_jax.config import Config
from bigram_jax.counts import pair_ids
from bigram_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class PairCounts:
    """Sparse transition counts of a split: sorted unique pair ids i * V + j and how often each occurs.

    Dense (V, V) counts of a 50,257-token vocabulary would take 20 GB; a split has at most one pair per token.
    """

    ids: np.ndarray  # (nnz,) int64, sorted
    n: np.ndarray  # (nnz,) float64
    vocab_size: int

    @classmethod
    def of(cls, tokens: np.ndarray, vocab_size: int) -> PairCounts:
        """Count every transition tokens[i] -> tokens[i+1] of a split once."""
        ids, n = np.unique(pair_ids(tokens[:-1], tokens[1:], vocab_size), return_counts=True)
        return cls(ids, n.astype(np.float64), vocab_size)

    @classmethod
    def from_dense(cls, counts: np.ndarray) -> PairCounts:
        """The sparse form of a (V, V) count matrix."""
        ids = np.flatnonzero(counts)
        return cls(ids.astype(np.int64), counts.reshape(-1)[ids].astype(np.float64), counts.shape[0])

    @property
    def rows(self) -> np.ndarray:
        """(nnz,) current token of each pair."""
        return self.ids // self.vocab_size

    @property
    def cols(self) -> np.ndarray:
        """(nnz,) next token of each pair."""
        return self.ids % self.vocab_size

    def row_totals(self) -> np.ndarray:
        """(V,) how often each token is followed by anything."""
        return np.bincount(self.rows, weights=self.n, minlength=self.vocab_size)

    def dense(self) -> np.ndarray:
        """(V, V) float64 count matrix."""
        out = np.zeros(self.vocab_size * self.vocab_size)
        out[self.ids] = self.n
        return out.reshape(self.vocab_size, self.vocab_size)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A tokenized corpus, split, with each split's transition counts (sparse: any V fits)."""

    path: Path
    sha256: str
    tokenizer: data_lib.CharTokenizer | data_lib.TokenIds
    train: np.ndarray
    val: np.ndarray
    train_counts: PairCounts
    val_counts: PairCounts


def _token_splits(cfg: Config, path: Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    """(train, val, sha256, V) of token-id data: one file split by train_frac, or separate train/val files."""
    ids, sha = data_lib.read_tokens(path)
    if cfg.val_data:
        val, val_sha = data_lib.read_tokens(Path(cfg.val_data))
        train, sha = ids, hashlib.sha256(f"{sha}+{val_sha}".encode()).hexdigest()
    else:
        train, val = data_lib.split(ids, cfg.train_frac)
    top = int(max(train.max(initial=0), val.max(initial=0)))
    V = cfg.vocab_size or top + 1
    if top >= V:
        raise UserError(f"token id {top} in the data is out of range for vocab_size {V}")
    return train, val, sha, V


def load_corpus(cfg: Config) -> Corpus:
    """Read, tokenize and split the corpus; count every transition of each split once."""
    path = data_lib.resolve_corpus(cfg.data)
    if path.suffix in data_lib.TOKEN_SUFFIXES:
        train, val, sha, V = _token_splits(cfg, path)
        tok = data_lib.TokenIds(V)
    else:
        if cfg.val_data:
            raise UserError("--val-data needs token-id --data (.bin or .npy); text data is split by --train-frac")
        text, sha = data_lib.load_text(path)
        tok = data_lib.CharTokenizer.from_text(text)
        if cfg.vocab_size not in (0, tok.vocab_size):
            raise UserError(f"vocab_size applies to token-id data; this text has {tok.vocab_size} characters, "
                            f"not {cfg.vocab_size}")
        train, val = data_lib.split(tok.encode(text), cfg.train_frac)
    if len(train) <= cfg.block_size:
        raise UserError(f"corpus too short: the train split has {len(train)} tokens, "
                        f"block_size {cfg.block_size} needs at least {cfg.block_size + 1}")
    if len(val) < 2:
        raise UserError(f"corpus too short: the val split has {len(val)} token(s), at least 2 are needed")
    V = tok.vocab_size
    return Corpus(path=path, sha256=sha, tokenizer=tok, train=train, val=val,
                  train_counts=PairCounts.of(train, V), val_counts=PairCounts.of(val, V))
