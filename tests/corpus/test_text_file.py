"""Texts encoded into the cache, and tokenizers' edges: what a review of the tokenizer work found (each test failed
before its fix)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from bigram_jax.corpus import text_file
from bigram_jax.config import make_config
from bigram_jax.corpus.load import load_corpus
from bigram_jax.errors import UserError
from bigram_jax.corpus.tokenizers import CharTokenizer
from tests.conftest import run_script

pytestmark = pytest.mark.usefixtures("own_cache")  # (conftest.py)


def _meta_pkl(folder: Path, text: str) -> Path:
    chars = sorted(set(text))
    path = folder / "meta.pkl"
    path.write_bytes(pickle.dumps({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                                   "stoi": {c: i for i, c in enumerate(chars)}}))
    return path


def test_a_text_read_with_a_character_meta_pkl_trains_as_the_text(tmp_path, shakespeare_path, shakespeare_text):
    """nanoGPT's character table on the text itself (not its .bin): the same data and floor lines as the run on
    the text's own characters (the table holds none of the probes' digits: no probe applies to characters)."""
    meta = _meta_pkl(tmp_path, shakespeare_text)
    lines = []
    for extra in ([], ["--tokenizer", str(meta)]):
        r = run_script("train.py", "--data", str(shakespeare_path), "--max-iters", "20", "--eval-interval", "20",
                       "--sample-tokens", "0", "--out-dir", str(tmp_path / f"r{len(extra)}"), *extra)
        assert r.returncode == 0, r.stderr
        lines.append([x for x in r.stdout.splitlines() if x.startswith(("floor:", "step"))])
    assert lines[0] == lines[1]


def test_a_large_character_text_needs_no_line_breaks(tmp_path, monkeypatch):
    """The lecture's characters cut nowhere in particular: a large text whose every line starts with a space (no
    line break between non-space characters) streams as the same ids as the text decoded at once."""
    text = "".join(f" line {i} of words\n" for i in range(3000))
    path = tmp_path / "spaced.txt"
    path.write_text(text)
    small = load_corpus(make_config({"data": str(path)}))
    monkeypatch.setattr(text_file, "IN_MEMORY_MAX", 1000)
    monkeypatch.setattr(text_file, "CHUNK", 777)
    monkeypatch.setattr(text_file, "MAX_LINE", 5000)  # far below the text: a cut rule would have refused it
    big = load_corpus(make_config({"data": str(path)}))
    assert big.train_file is not None and big.tokenizer == small.tokenizer
    np.testing.assert_array_equal(np.asarray(big.train), small.train)


def test_a_new_encoding_leaves_a_running_runs_file_as_it_was(tmp_path, own_cache, shakespeare_text):
    """A text changed (even only touched) while a run trains on its encoding: the next run encodes it afresh into
    a file of its own, and the first run's reads still see its own tokens, never "changed during the run"."""
    path = tmp_path / "t.txt"
    path.write_text(shakespeare_text[:50_000])
    tok = CharTokenizer.from_text(shakespeare_text)
    first, _, _ = text_file.encode_to_cache(path, path.stat(), tok)
    before = np.asarray(first.tokens[:1000]).copy()
    path.write_text(shakespeare_text[50_000:100_000])  # another text: its own token file, the first one deleted
    second, _, _ = text_file.encode_to_cache(path, path.stat(), tok)
    assert second.path != first.path and not first.path.exists()
    first.check_unchanged()  # the file the first run opened is the one it reads
    np.testing.assert_array_equal(first.windows(np.array([0]), 1000)[0], before)
    assert not np.array_equal(np.asarray(second.tokens[:1000]), before)


def test_a_stopped_encodings_leftovers_are_cleared(tmp_path, own_cache, shakespeare_text):
    """A stop exits at once, leaving the encoding's temporary file: the next encoding of that text removes it."""
    path = tmp_path / "t.txt"
    path.write_text(shakespeare_text[:20_000])
    tok = CharTokenizer.from_text(shakespeare_text)
    tf, _, _ = text_file.encode_to_cache(path, path.stat(), tok)
    left = tf.path.parent / "tmpstopped.tmp"
    left.write_bytes(b"\0" * 4096)
    os.utime(path)  # a new version of the text: encoded again
    text_file.encode_to_cache(path, path.stat(), tok)
    assert not left.exists()


def test_an_unwritable_cache_is_one_clear_line_for_a_text_to_encode(tmp_path, monkeypatch, shakespeare_text):
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile"))
    path = tmp_path / "t.txt"
    path.write_text(shakespeare_text[:20_000])
    with pytest.raises(UserError, match="cannot write the cache folder .* XDG_CACHE_HOME"):
        text_file.encode_to_cache(path, path.stat(), CharTokenizer.from_text(shakespeare_text))


def test_tiktoken_ids_with_no_bytes_decode_as_replacement_characters():
    """cl100k_base and o200k_base leave some ids without bytes, and a table samples them: U+FFFD, not a crash."""
    tiktoken = pytest.importorskip("tiktoken")
    from bigram_jax.corpus.bpe import Tiktoken
    from bigram_jax.corpus.tokenizers import show

    enc = tiktoken.Encoding(name="gaps", pat_str=r"\S+|\s+", mergeable_ranks={bytes([b]): b for b in range(256)},
                            special_tokens={"<|end|>": 300})  # ids 256..299 have no bytes
    tok = Tiktoken("gaps", enc)
    assert tok.vocab_size == 301
    assert tok.decode([65, 260, 66]) == "A\ufffdB"
    assert show(tok, np.array([65, 299, 300, 66])) == "A\ufffd<|end|>B"
