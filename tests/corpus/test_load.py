"""Loading a corpus (bigram_jax/corpus/load.py): token arrays, val files, nanoGPT's folder as its text."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from bigram_jax.config import make_config
from bigram_jax.corpus import token_file
from bigram_jax.corpus.load import load_corpus
from bigram_jax.counts import PairCounts, dense_counts
from bigram_jax.errors import UserError
from tests.conftest import _final_state, _leaves, _line, _walk
from tests.conftest import loss_rows as _rows


@pytest.mark.parametrize("array, msg", [(np.zeros((2, 3), np.int32), "1-D integer array"),
                                        (np.zeros(5, np.float32), "1-D integer array"),
                                        (np.array([3, -1, 2, 5]), "negative token id")])
def test_bad_token_arrays_are_user_errors(tmp_path, array, msg):
    from bigram_jax.config import make_config
    from bigram_jax.corpus.load import load_corpus

    np.save(tmp_path / "x.npy", array)
    with pytest.raises(UserError, match=msg):
        load_corpus(make_config({"data": str(tmp_path / "x.npy"), "block_size": 1, "train_frac": 0.5}))


def test_a_text_data_fifo_is_refused_at_once(tmp_path, monkeypatch):
    """A text --data is opened through the checked open before its size picks the path it takes: a FIFO is refused
    at once, even one put under the name after a check by name saw a regular file (stood in for here by the stat
    by name saying so); the old check by name went on to open the FIFO, and blocked there."""
    from pathlib import Path

    from tests.store.test_files import _unblocked

    fifo, regular = tmp_path / "fifo.txt", tmp_path / "regular.txt"
    os.mkfifo(fifo)
    regular.write_text("hello there\n" * 20)
    real_stat = Path.stat
    monkeypatch.setattr(Path, "stat", lambda self, *a, **k: real_stat(regular if self == fifo else self, *a, **k))
    with _unblocked(fifo), pytest.raises(UserError, match=f"data file {re.escape(str(fifo))} is not a regular file"):
        load_corpus(make_config({"data": str(fifo), "block_size": 1, "train_frac": 0.5}))


def test_token_corpus_split_and_separate_val_file(tmp_path):
    from bigram_jax.config import make_config
    from bigram_jax.corpus.load import load_corpus

    ids = np.arange(1000) % 37
    ids.astype("<u2").tofile(tmp_path / "train.bin")
    (np.arange(100) % 37).astype("<u2").tofile(tmp_path / "val.bin")
    c = load_corpus(make_config({"data": str(tmp_path / "train.bin")}))
    assert c.vocab_size == c.tokenizer.vocab_size == 37 and len(c.train) == 900 and len(c.val) == 100 and c.tokenizer.vocab is None
    c = load_corpus(make_config({"data": str(tmp_path / "train.bin"), "val_data": str(tmp_path / "val.bin"),
                                 "vocab_size": 64}))
    assert c.vocab_size == c.tokenizer.vocab_size == 64 and len(c.train) == 1000 and len(c.val) == 100
    assert c.train_counts.n.sum() == 999 and c.val_counts.vocab_size == 64
    with pytest.raises(UserError, match="token id 36 in the data is out of range for vocab_size 30"):
        load_corpus(make_config({"data": str(tmp_path / "train.bin"), "vocab_size": 30}))


@pytest.mark.usefixtures("own_cache")
def test_file_counts_match_the_in_memory_split(tmp_path, monkeypatch):
    ids = _walk(5000, 50)
    np.save(tmp_path / "t.npy", ids.astype(np.int32))
    monkeypatch.setattr(token_file, "CHUNK", 777)
    c = load_corpus(make_config({"data": str(tmp_path / "t.npy"), "vocab_size": 64}))
    assert isinstance(c.train, np.memmap) and c.vocab_size == 64  # mapped, never converted whole
    np.testing.assert_array_equal(c.train_counts.dense(), dense_counts(ids[:4500], 64))
    np.testing.assert_array_equal(c.val_counts.dense(), PairCounts.of(ids[4500:], 64).dense())


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
def test_nanogpt_folder_finds_its_meta_pkl_and_says_so(pair):
    data = _line(pair["bin"][1], "data:")
    folder = pair["folder"]
    assert str(folder / "train.bin") in data and str(folder / "val.bin") in data, data
    assert str(folder / "meta.pkl") in data and "found beside --data" in data and "vocab 65" in data, data
    sizes = lambda line: re.search(r"\(([\d,]+ train / [\d,]+ val tokens, vocab \d+)", line).group(1)  # noqa: E731
    assert sizes(data) == sizes(_line(pair["text"][1], "data:")) == "1,003,854 train / 111,540 val tokens, vocab 65"


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
def test_nanogpt_folder_trains_bit_identically_to_the_text(pair):
    (text_run, text_out), (bin_run, bin_out) = pair["text"], pair["bin"]
    assert _line(bin_out, "floor:") == _line(text_out, "floor:")
    assert _rows(bin_run) == _rows(text_run) and sorted(_rows(bin_run)) == [0, 100, 200, 300]
    (a, meta_a), (b, meta_b) = _final_state(text_run), _final_state(bin_run)
    assert int(a.step) == int(b.step) == 300
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert meta_a["vocab"] == meta_b["vocab"] and meta_b["tokenizer"]["kind"] == "meta.pkl"
    sample = lambda run: json.loads((run / "summary.json").read_text())["sample"]  # noqa: E731
    assert sample(bin_run) == sample(text_run) and len(sample(bin_run)) == 201  # the id-0 start, then 200
