"""Tokenizer, corpus resolution and loading, split and on-device batches."""
from __future__ import annotations

import hashlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax import data as data_lib
from bigram_jax.corpus import files
from bigram_jax.corpus import token_file
from bigram_jax.errors import UserError
from bigram_jax.corpus.tokenizers import CharTokenizer


def test_vocab_is_sorted_set_of_corpus(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    assert tok.vocab_size == 65
    assert list(tok.vocab) == sorted(set(shakespeare_text))
    assert tok.vocab[0] == "\n" and tok.vocab[1] == " "


def test_round_trip_whole_corpus(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    ids = tok.encode(shakespeare_text)
    assert ids.dtype == np.int32 and len(ids) == len(shakespeare_text) == 1_115_394
    assert tok.decode(ids) == shakespeare_text
    assert tok.decode(tok.encode("hii there")) == "hii there"
    assert tok.encode("hi").tolist() == [tok.vocab.index("h"), tok.vocab.index("i")]


def test_unknown_character_is_named():
    tok = CharTokenizer("abc")
    with pytest.raises(UserError, match=r"'z'.*'é'|'é'.*'z'"):
        tok.encode("abzé")
    with pytest.raises(UserError, match="in \\[0, 3\\)"):
        tok.decode([0, 3])


def test_split_is_first_90_percent():
    data = np.arange(1000)
    train, val = data_lib.split(data)
    assert len(train) == 900 and train[-1] == 899 and val[0] == 900 and len(val) == 100


def test_batch_windows_come_from_the_split(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    train, _ = data_lib.split(tok.encode(shakespeare_text))
    x, y = jax.jit(data_lib.get_batch, static_argnums=(2, 3))(jax.random.key(0), jnp.asarray(train), 32, 8)
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape == (32, 8) and x.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    hay = train.tobytes()
    for row_x, row_y in zip(x, y):
        i = hay.find(row_x.tobytes())
        assert i >= 0 and i % 4 == 0, "x must be a window of the train split"
        assert hay.find(np.concatenate([row_x, row_y[-1:]]).tobytes()) >= 0


def test_batch_offsets_cover_the_whole_split():
    data = jnp.arange(20, dtype=jnp.int32)
    x, y = data_lib.get_batch(jax.random.key(1), data, 4000, 3)
    starts = np.asarray(x[:, 0])
    assert starts.min() == 0 and starts.max() == 16  # offsets in [0, len - T), as torch.randint(len - T)
    assert np.asarray(y[:, -1]).max() == 19


def test_load_text_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        files.load_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        files.load_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        files.load_text(tmp_path / "latin1.txt")
    (tmp_path / "bin.dat").write_bytes(b"ab\x00\x00cd")
    with pytest.raises(UserError, match="binary"):
        files.load_text(tmp_path / "bin.dat")
    (tmp_path / "ok.txt").write_text("hello\n")
    text, sha = files.load_text(tmp_path / "ok.txt")
    assert text == "hello\n" and sha == hashlib.sha256(b"hello\n").hexdigest()


def test_resolve_tinyshakespeare(tmp_path, monkeypatch, shakespeare_path):
    monkeypatch.setenv("BIGRAM_JAX_DATA", str(shakespeare_path))
    assert files.resolve_corpus("tinyshakespeare") == shakespeare_path
    assert files.resolve_corpus(str(tmp_path / "x.txt")) == tmp_path / "x.txt"
    # no env, no cache, no network: one line telling how to fix it
    monkeypatch.delenv("BIGRAM_JAX_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(files.urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match="--data PATH or set BIGRAM_JAX_DATA"):
        files.resolve_corpus("tinyshakespeare")
    # a verified cache copy is used without the network; a corrupted one is not trusted
    cached = tmp_path / "cache" / "bigram_jax" / "tinyshakespeare.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(shakespeare_path.read_bytes())
    assert files.resolve_corpus("tinyshakespeare") == cached
    cached.write_bytes(b"tampered")
    with pytest.raises(UserError):
        files.resolve_corpus("tinyshakespeare")


def test_download_is_verified_and_cached(tmp_path, monkeypatch, shakespeare_path):
    monkeypatch.delenv("BIGRAM_JAX_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    payload = {"bytes": shakespeare_path.read_bytes()}

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return payload["bytes"]

    monkeypatch.setattr(files.urllib.request, "urlopen", lambda *a, **k: Response())
    path = files.resolve_corpus("tinyshakespeare")
    assert path.read_bytes() == payload["bytes"]
    path.unlink()
    payload["bytes"] = b"not shakespeare"
    with pytest.raises(UserError, match="sha256"):
        files.resolve_corpus("tinyshakespeare")
    assert not path.exists()


def test_check_ids():
    assert data_lib.check_ids(np.array([[0, 4]]), 5).dtype == np.int32
    for bad in ([[-1]], [[5]]):
        with pytest.raises(UserError, match="in \\[0, 5\\)"):
            data_lib.check_ids(np.array(bad), 5)
    with pytest.raises(UserError, match="integers"):
        data_lib.check_ids(np.array([[0.5]]), 5)


def test_token_files_bin_and_npy_read_the_same_ids(tmp_path):
    ids = np.random.default_rng(0).integers(0, 50257, 1000)
    ids.astype("<u2").tofile(tmp_path / "a.bin")  # nanoGPT's prepare.py layout
    np.save(tmp_path / "a.npy", ids.astype(np.int64))
    a, b = token_file.open_tokens(tmp_path / "a.bin"), token_file.open_tokens(tmp_path / "a.npy")
    np.testing.assert_array_equal(a.tokens, ids)
    np.testing.assert_array_equal(b.tokens, ids)
    assert isinstance(a.tokens, np.memmap) and isinstance(b.tokens, np.memmap)  # mapped, not read
    scan = token_file.scan(a)
    assert scan.sha256 == hashlib.sha256((tmp_path / "a.bin").read_bytes()).hexdigest()
    assert (scan.min_id, scan.max_id) == (ids.min(), ids.max()) == (token_file.scan(b).min_id, token_file.scan(b).max_id)


@pytest.mark.parametrize("name, content, msg", [
    ("odd.bin", b"\x01\x02\x03", "size (3 bytes) is odd"),
    ("empty.bin", b"", "data file is empty"),
    ("junk.npy", b"not numpy", "is not a readable .npy array"),
])
def test_bad_token_files_are_user_errors(tmp_path, name, content, msg):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=re.escape(msg)):
        token_file.open_tokens(tmp_path / name)


@pytest.mark.parametrize("array, msg", [(np.zeros((2, 3), np.int32), "1-D integer array"),
                                        (np.zeros(5, np.float32), "1-D integer array"),
                                        (np.array([3, -1, 2, 5]), "negative token id")])
def test_bad_token_arrays_are_user_errors(tmp_path, array, msg):
    from bigram_jax.config import make_config
    from bigram_jax.corpus.load import load_corpus

    np.save(tmp_path / "x.npy", array)
    with pytest.raises(UserError, match=msg):
        load_corpus(make_config({"data": str(tmp_path / "x.npy"), "block_size": 1, "train_frac": 0.5}))


def test_token_ids_tokenizer():
    from bigram_jax.corpus.tokenizers import TokenIds, from_record

    tok = TokenIds(100)
    assert tok.encode("3 14, 15").tolist() == [3, 14, 15] and tok.decode([3, 14, 15]) == "3 14 15"
    assert from_record(None, None, 100) == tok and from_record(None, "ab", 2) == CharTokenizer("ab")
    with pytest.raises(UserError, match="token ids must be in"):
        tok.encode("100")
    with pytest.raises(UserError, match="whitespace-separated integers"):
        tok.encode("hello")


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
