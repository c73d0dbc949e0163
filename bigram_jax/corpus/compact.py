"""--compact-vocab: the table's rows are the ids a corpus uses, not its tokenizer's whole vocabulary.

nanoGPT's shakespeare in GPT-2 tokens uses 11,706 of 50,257 ids. A bigram table trained on it gives every id the
corpus never holds a probability that only shrinks; leaving those ids out is the same model with zero probability
on them, and a table of 11,706^2 parameters (1.6 GB with AdamW) instead of 50,304^2 (57 GB). Each row r stands for
the tokenizer's id `ids[r]`; the checkpoint records `ids` (under the metadata's checksum), so sampling, loading
and export map rows back to the tokenizer's ids without being told.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bigram_jax.corpus import tokenizers
from bigram_jax.counts import PairCounts
from bigram_jax.errors import UserError

MAP_KEY, FULL_KEY = "id_map", "tokenizer_vocab_size"  # what a tokenizer record adds for a compact table


@dataclasses.dataclass(frozen=True, eq=False)
class CompactTokenizer:
    """A tokenizer whose ids are the table's rows: row r is the base tokenizer's id ids[r]."""

    base: Any  # the tokenizer of the text (tokenizers.py, bpe.py), with its own ids
    ids: np.ndarray  # (V_c,) int64, ascending: the base id of each row

    @property
    def vocab_size(self) -> int:
        return len(self.ids)

    @property
    def vocab(self) -> str | None:
        """A character table's characters of the rows (row r: base.vocab[ids[r]]), as the checkpoint's `vocab`
        for plots and readers of older versions; None for other tokenizers."""
        base = getattr(self.base, "vocab", None)
        return "".join(base[i] for i in self.ids.tolist()) if isinstance(base, str) else None

    @property
    def text(self) -> bool:
        return self.base.text

    @property
    def identity(self) -> str:
        """The base tokenizer's: which ids the rows stand for is the corpus's business, checked on resume."""
        return self.base.identity

    def record(self) -> dict:
        return {**self.base.record(), MAP_KEY: self.ids.tolist(), FULL_KEY: self.base.vocab_size}

    def describe(self) -> str:
        return f"{self.base.describe()}, {len(self.ids):,} of its {self.base.vocab_size:,} ids"

    def rows_of(self, token_ids: np.ndarray) -> np.ndarray:
        """The rows of base-tokenizer ids; an id the table lacks (the corpus never used it) is one line."""
        token_ids = np.asarray(token_ids, np.int64).reshape(-1)
        at = np.minimum(np.searchsorted(self.ids, token_ids), len(self.ids) - 1)
        missing = self.ids[at] != token_ids
        if missing.any():
            bad = int(token_ids[np.argmax(missing)])
            shown = f" ({self.base.decode(np.array([bad]))!r})" if self.base.text and bad < self.base.vocab_size \
                else ""
            raise UserError(f"token id {bad}{shown} is not in this compact table: the training corpus never used it "
                            f"(the table holds {len(self.ids):,} of the tokenizer's {self.base.vocab_size:,} ids)")
        return at.astype(np.int32)

    def encode(self, s: str) -> np.ndarray:
        return self.rows_of(self.base.encode(s))

    def decode(self, rows) -> str:
        from bigram_jax.data import check_ids

        return self.base.decode(self.ids[check_ids(np.asarray(rows).reshape(-1), len(self.ids))])


def tokenizer_of(record: dict | None, vocab: str | None, vocab_size: int) -> Any:
    """The tokenizer a checkpoint records (tokenizers.from_record), its compact map applied if it has one."""
    if record is None or MAP_KEY not in record:
        return tokenizers.from_record(record, vocab, vocab_size)
    base_record = {k: v for k, v in record.items() if k not in (MAP_KEY, FULL_KEY)}
    full, ids = record.get(FULL_KEY), record[MAP_KEY]
    if not (isinstance(full, int) and isinstance(ids, list) and len(ids) == vocab_size and ids
            and all(isinstance(i, int) for i in ids)):
        raise UserError("the checkpoint's compact id map is malformed")
    ids_array = np.array(ids, np.int64)
    if ids_array[0] < 0 or ids_array[-1] >= full or (np.diff(ids_array) <= 0).any():
        raise UserError("the checkpoint's compact id map is malformed (ids not ascending within the vocabulary)")
    return CompactTokenizer(tokenizers.from_record(base_record, vocab, full), ids_array)


class RowView:
    """Token ids read as table rows, rows[tokens[...]], for whatever is indexed: a memory-mapped split stays mapped
    (a slice is another view; an index or np.asarray reads and maps only what it asks for)."""

    def __init__(self, tokens: Any, rows: np.ndarray):
        self.tokens, self.rows = tokens, rows

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.tokens),)

    dtype = np.dtype(np.int32)

    def __getitem__(self, index: Any) -> Any:
        part = self.tokens[index]
        return RowView(part, self.rows) if isinstance(index, slice) else self.rows[part]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.rows[np.asarray(self.tokens)]
        return out if dtype is None else out.astype(dtype, copy=False)


def used_ids(*counts: PairCounts) -> np.ndarray:
    """The ids that occur in splits counted as `counts`, ascending (every token of a split of 2 or more tokens is
    the start or the end of one of its transitions)."""
    return np.unique(np.concatenate([part for c in counts for part in (np.unique(c.rows), np.unique(c.cols))]))


def row_map(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """(vocab_size,) int32: the row of each id in `ids`, -1 for the ids the table leaves out."""
    rows = np.full(vocab_size, -1, np.int32)
    rows[ids] = np.arange(len(ids), dtype=np.int32)
    return rows


def compact_counts(counts: PairCounts, rows: np.ndarray, n_rows: int) -> PairCounts:
    """The same transitions over the table's rows: the order of the pairs is kept, since rows keep the ids' order."""
    return PairCounts(rows[counts.rows].astype(np.int64) * n_rows + rows[counts.cols], counts.n, n_rows)
