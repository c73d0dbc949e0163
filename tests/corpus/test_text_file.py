"""Texts encoded into the cache (bigram_jax/corpus/text_file.py): streamed, never stale, changes refused."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigram_jax.config import make_config
from bigram_jax.corpus import text_file
from bigram_jax.corpus.load import load_corpus
from bigram_jax.corpus.tokenizers import CharTokenizer
from bigram_jax.errors import UserError
from tests.conftest import env_of, ok, one_line, rewrite_keeping_times, run_cli, said

FAST = ["--sample-tokens", "0", "--eval-interval", "10"]

pytestmark = pytest.mark.usefixtures("own_cache")


def test_a_large_character_text_needs_no_line_breaks(tmp_path, monkeypatch):
    """The lecture's characters cut nowhere in particular: a large text whose every line starts with a space (no
    line break between non-space characters) streams as the same ids as the text decoded at once."""
    text = "".join(f" line {i} of words\n" for i in range(3000))
    path = tmp_path / "spaced.txt"
    path.write_text(text)
    small = load_corpus(make_config({"data": str(path)}))
    monkeypatch.setattr(text_file, "IN_MEMORY_MAX", 1000)
    monkeypatch.setattr(text_file, "CHUNK", 777)
    monkeypatch.setattr(text_file, "MAX_ITEM", 5000)  # far below the text: a cut rule would have refused it
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


def test_a_large_text_is_encoded_streaming_into_the_same_run(tmp_path, monkeypatch, shakespeare_path):
    """Above IN_MEMORY_MAX a text is encoded in pieces into a cached token file: the same corpus, the same run."""
    from bigram_jax.corpus import text_file

    small = load_corpus(make_config({"data": str(shakespeare_path)}))
    monkeypatch.setattr(text_file, "IN_MEMORY_MAX", 1000)
    monkeypatch.setattr(text_file, "CHUNK", 4099)  # reads that split multi-byte characters and lines
    big = load_corpus(make_config({"data": str(shakespeare_path)}))
    assert big.train_file is not None and big.tokenizer == small.tokenizer and big.sha256 == small.sha256
    np.testing.assert_array_equal(np.asarray(big.train), small.train)
    np.testing.assert_array_equal(big.val_counts.dense(), small.val_counts.dense())
    (tmp_path / "bad.txt").write_bytes(b"ok\n" * 400 + b"\xff\xfe" + b"ok\n" * 400)
    with pytest.raises(UserError, match="not UTF-8 text.*offset 1200"):
        load_corpus(make_config({"data": str(tmp_path / "bad.txt")}))
    cached = sorted((tmp_path / "cache" / "bigram_jax" / "text").rglob("tokens-*.bin"))
    assert len(cached) == 1
    raw = bytearray(cached[0].read_bytes())
    raw[100] ^= 1  # a damaged cached encoding is noticed and rebuilt
    cached[0].write_bytes(bytes(raw))
    again = load_corpus(make_config({"data": str(shakespeare_path)}))
    np.testing.assert_array_equal(np.asarray(again.train), small.train)


def big_text_argv(out: Path, data: Path, *args: str) -> list[str]:
    """train.py's flags for a short run on `data` into `out`."""
    return ["--data", str(data), "--out-dir", str(out), "--max-iters", "20", *FAST, *args]


@pytest.fixture
def streamed(monkeypatch) -> None:
    """The large-text path (streamed, cached) for a text of any size, in this process."""
    monkeypatch.setattr(text_file, "IN_MEMORY_MAX", 1000)
    monkeypatch.setattr(text_file, "CHUNK", 4099)


def big_text_code(out: Path, data: Path, *args: str, chunk: int = 4099, patch: str = "") -> str:
    """A `python -c` program: train_main on `data` through the large-text path (streamed, cached), `patch` first."""
    return ("import sys\nfrom bigram_jax.corpus import text_file\n"
            f"text_file.IN_MEMORY_MAX, text_file.CHUNK = 1000, {chunk}\n{patch}\n"
            f"from bigram_jax.cli.train import train_main\nsys.exit(train_main({big_text_argv(out, data, *args)!r}))\n")


@pytest.mark.usefixtures("streamed")
def test_a_large_text_rewritten_with_its_size_and_mtime_put_back_is_encoded_again(tmp_path, shakespeare_path):
    """Issue 20, case 2 (large text): the last tenth of a streamed text replaced by other text of the same byte
    length (a new character '~'), its mtime put back: the rerun prints what a run on an empty cache prints."""
    data = tmp_path / "big.txt"
    shutil.copyfile(shakespeare_path, data)
    raw = data.read_bytes()
    assert b"~" not in raw
    tail = len(raw) // 10
    first = ok(run_cli("train.py", *big_text_argv(tmp_path / "first", data)))
    rewrite_keeping_times(data, raw[:-tail] + (b"~zz\n" * tail)[:tail])
    stale = ok(run_cli("train.py", *big_text_argv(tmp_path / "stale", data)))
    fresh = ok(run_cli("train.py", *big_text_argv(tmp_path / "fresh", data),
                       env={"XDG_CACHE_HOME": str(tmp_path / "empty")}))
    assert said(stale, "data:", "floor:") == said(fresh, "data:", "floor:") != said(first, "data:", "floor:")


@pytest.mark.usefixtures("streamed")
def test_a_text_that_grows_while_it_is_encoded_is_refused(tmp_path, shakespeare_path, monkeypatch):
    """Issue 20, case 4: text with new characters appended between the large-text path's two passes: exit 2 and
    one line "changed while it was encoded" (no wrong ids, no traceback)."""
    pass1 = text_file._vocab_and_sha

    def grown(path, *a, **k):
        out = pass1(path, *a, **k)
        with open(path, "a", encoding="utf-8") as f:
            f.write("\u03a9\u03a9 zzz\n" * 1000)
        return out

    monkeypatch.setattr(text_file, "_vocab_and_sha", grown)
    data = tmp_path / "big.txt"
    shutil.copyfile(shakespeare_path, data)
    r = run_cli("train.py", *big_text_argv(tmp_path / "o", data))
    one_line(r, 2, "changed while it was encoded")
    assert data.stat().st_size > shakespeare_path.stat().st_size  # the patch did append


TOGETHER = """
import os, time
_locked = text_file._locked
def _at_once(*a, **k):  # each run, ready to lock the text's cache folder, waits there for the other
    open(os.path.join({ready!r}, "{k}"), "w").close()
    deadline = time.monotonic() + 240  # a hang guard only: the other run gets here in seconds
    while len(os.listdir({ready!r})) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    return _locked(*a, **k)
text_file._locked = _at_once
"""


@pytest.mark.e2e
@pytest.mark.parametrize("attempt", range(3))
def test_two_first_runs_on_one_large_text_at_once_agree(tmp_path, shakespeare_path, attempt):
    """Issue 20, case 8: two runs started together on the same new large text and the same empty cache (their
    encoding begun at the same moment: each waits there for the other) both succeed and print the same data,
    floor and step lines."""
    data = tmp_path / "big.txt"
    shutil.copyfile(shakespeare_path, data)
    (tmp_path / "ready").mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", big_text_code(tmp_path / f"o{k}", data, patch=TOGETHER.format(
                              ready=str(tmp_path / "ready"), k=k))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env_of()) for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, (p.returncode, err[-3000:])
    lines = [[x for x in o.splitlines() if x.startswith(("data:", "floor:", "step"))] for o, _ in outs]
    assert lines[0] == lines[1] and len(lines[0]) >= 4, lines


@pytest.mark.parametrize("kind", ["tiktoken", "chars"])
def test_nanogpts_split_encodes_each_part_on_its_own(tmp_path, monkeypatch, tk_enc, shakespeare_text, kind):
    """Issue 27 item 4: with train_frac, the first int(0.9 * characters) characters and the rest are encoded each
    on its own (nanoGPT's prepare.py), whatever the reads and cuts, and the train split's length comes back (and
    from the cache). Characters: the same ids either way."""
    from bigram_jax.corpus import bpe

    monkeypatch.setattr(text_file, "ITEM_CHARS", 97)
    monkeypatch.setattr(text_file, "CHUNK", 1000)
    text = shakespeare_text[:30_000].replace("the", "th\u00e9") + " \u2014 end"  # more bytes than characters

    def parts(t: str) -> list[int]:
        return tk_enc.encode_ordinary(t[:int(0.9 * len(t))]) + tk_enc.encode_ordinary(t[int(0.9 * len(t)):])

    while parts(text) == tk_enc.encode_ordinary(text):
        text += "s"  # until the split falls mid-token: the parts' ids differ from the whole's
    s = int(0.9 * len(text))
    path = tmp_path / "t.txt"
    path.write_text(text)
    if kind == "tiktoken":
        tok, expected = bpe.Tiktoken("t", tk_enc), [tk_enc.encode_ordinary(text[:s]), tk_enc.encode_ordinary(text[s:])]
        assert expected[0] + expected[1] != tk_enc.encode_ordinary(text)
    else:
        tok = CharTokenizer.from_text(text)
        expected = [tok.encode(text[:s]).tolist(), tok.encode(text[s:]).tolist()]
    for _ in range(2):  # encoded, then from the cache
        tf, _, _, n_train = text_file.encode_to_cache(path, path.stat(), tok, train_frac=0.9)
        assert np.asarray(tf.tokens).tolist() == expected[0] + expected[1] and n_train == len(expected[0])
    tf, _, _ = text_file.encode_to_cache(path, path.stat(), tok)  # no split: the whole text, a file of its own
    assert len(tf.tokens) == len((tk_enc.encode_ordinary if kind == "tiktoken" else tok.encode)(text))
