"""Token-id files (bigram_jax/corpus/token_file.py): mapped, counted, cached, checked, run end to end."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bigram_jax.config import make_config
from bigram_jax.corpus import token_file
from bigram_jax.corpus.load import load_corpus
from bigram_jax.counts import PairCounter
from bigram_jax.errors import UserError
from tests.conftest import (
    _walk,
    devices_env,
    ok,
    one_line,
    rewrite_keeping_times,
    run_cli,
    run_script,
    said,
    write_ids,
)

FAST = ["--sample-tokens", "0", "--eval-interval", "10"]


def train(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """train.py into `out`, in this process."""
    return run_cli("train.py", "--out-dir", str(out), *args, env=env)


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


@pytest.mark.parametrize("name", ["fifo.bin", "fifo.npy"])
def test_a_token_file_that_is_a_fifo_is_refused_at_once(tmp_path, monkeypatch, name):
    """open_tokens opens the file once, through the checked open, and maps that open file: a FIFO is refused at
    once, even one put under the name after it was checked as a regular file (stood in for here by its stat by
    name saying so); the old check-then-map-by-name opened the FIFO again, and blocked there."""
    from tests.store.test_files import _unblocked

    fifo, regular = tmp_path / name, tmp_path / "regular.bin"
    os.mkfifo(fifo)
    np.arange(10, dtype="<u2").tofile(regular)
    real_stat = Path.stat
    monkeypatch.setattr(Path, "stat", lambda self, *a, **k: real_stat(regular if self == fifo else self, *a, **k))
    with _unblocked(fifo), pytest.raises(UserError, match=f"data file {re.escape(str(fifo))} is not a regular file"):
        token_file.open_tokens(fifo)


def test_npy_files_map_as_np_load_maps_them(tmp_path):
    """The .npy header is read from the one open file (np.load maps by name only): any integer dtype and byte
    order, format 2.0, a Fortran-ordered 1-D array; object arrays and unknown versions are one line."""
    ids = np.arange(1000) % 251
    for i, arr in enumerate([ids.astype(">i4"), ids.astype(np.uint8), np.asfortranarray(ids.astype(np.int16))]):
        np.save(tmp_path / f"{i}.npy", arr)
        np.testing.assert_array_equal(token_file.open_tokens(tmp_path / f"{i}.npy").tokens, ids)
    with open(tmp_path / "v2.npy", "wb") as f:
        np.lib.format.write_array(f, ids.astype(np.int32), version=(2, 0))
    tf = token_file.open_tokens(tmp_path / "v2.npy")
    np.testing.assert_array_equal(tf.tokens, ids)
    assert tf.offset == os.path.getsize(tmp_path / "v2.npy") - 4 * ids.size
    np.save(tmp_path / "obj.npy", np.array([1, None], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="obj.npy is not a readable .npy array"):
        token_file.open_tokens(tmp_path / "obj.npy")
    raw = bytearray((tmp_path / "v2.npy").read_bytes())
    raw[6] = 9  # format version 9.0
    (tmp_path / "v9.npy").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="v9.npy is not a readable .npy array"):
        token_file.open_tokens(tmp_path / "v9.npy")


@pytest.mark.usefixtures("own_cache")
@pytest.mark.parametrize("V", [37, 7000])  # a dense table, and sparse counting past DENSE_MAX_PAIRS
def test_streamed_counts_equal_a_brute_force_count(tmp_path, monkeypatch, V):
    ids = _walk(10_007, V)
    ids.astype("<u2").tofile(tmp_path / "t.bin")
    monkeypatch.setattr(token_file, "CHUNK", 1000)  # reads end mid-split: transitions across reads count too
    tf = token_file.open_tokens(tmp_path / "t.bin")
    for lo, hi in ((0, 9006), (9006, 10_007), (0, 10_007)):
        got_ids, got_n = token_file.split_counts(tf, lo, hi, V)
        brute: dict[int, int] = {}
        for a, b in zip(ids[lo:hi - 1].tolist(), ids[lo + 1:hi].tolist()):
            brute[a * V + b] = brute.get(a * V + b, 0) + 1
        assert dict(zip(got_ids.tolist(), got_n.tolist())) == brute
    counter = PairCounter(V)
    assert (counter.table is None) == (V * V > 1 << 25)


@pytest.mark.usefixtures("own_cache")
def test_a_second_run_reuses_the_cache_and_a_changed_file_invalidates_it(tmp_path, monkeypatch):
    path = tmp_path / "t.bin"
    _walk(3000, 40).astype("<u2").tofile(path)
    cfg = make_config({"data": str(path)})
    first = load_corpus(cfg)
    monkeypatch.setattr(token_file, "_chunks", lambda *a: pytest.fail("read the file again"))
    again = load_corpus(cfg)  # everything from the cache
    assert again.sha256 == first.sha256
    np.testing.assert_array_equal(again.train_counts.n, first.train_counts.n)
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _walk(3000, 40, seed=1).astype("<u2").tofile(path)  # same size, new content and mtime
    os.utime(path, ns=(1, 1))
    changed = load_corpus(cfg)
    assert changed.sha256 != first.sha256
    assert not np.array_equal(changed.train_counts.dense(), first.train_counts.dense())


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
def test_bad_token_files_mid_size(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00" * 100 + b"\x07")
    np.arange(100, dtype="<u2").tofile(tmp_path / "wide.bin")
    for argv, msg in ((["--data", str(tmp_path / "odd.bin")], "is odd"),
                      (["--data", str(tmp_path / "wide.bin"), "--vocab-size", "50"], "out of range for vocab_size 50")):
        r = run_cli("train.py", *argv, "--out-dir", str(tmp_path / "o"))
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # in a process of its own, its time limit the guard: a regression would read /dev/zero forever
    r = run_script("train.py", "--data", "/dev/zero", "--out-dir", str(tmp_path / "o"), env=devices_env(1))
    assert r.returncode == 2 and "not a regular file" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.usefixtures("own_cache")
def test_a_token_file_rewritten_with_its_size_and_mtime_put_back_is_read_again(tmp_path):
    """Issue 20, case 2 (token ids): a.bin rewritten in place with other ids (up to 60), its size and mtime put
    back: a run on the old cache prints the data and floor lines of a run on an empty cache, and --resume of the
    run made on the old content is refused (one line, exit 2, "data file differs")."""
    data = tmp_path / "a.bin"
    write_ids(data, 49, seed=0)
    # --vocab-size 64: the resume below meets the same table size and is judged by the data alone
    old = ok(train(tmp_path / "old", "--data", str(data), "--max-iters", "20", "--vocab-size", "64", *FAST))
    new = tmp_path / "new.bin"
    write_ids(new, 60, seed=1)
    rewrite_keeping_times(data, new.read_bytes())
    args = ["--data", str(data), "--max-iters", "20", *FAST]
    stale = ok(train(tmp_path / "stale", *args))
    fresh = ok(train(tmp_path / "fresh", *args, env={"XDG_CACHE_HOME": str(tmp_path / "empty")}))
    assert "vocab 61" in said(fresh, "data:")[0]
    assert said(stale, "data:", "floor:") == said(fresh, "data:", "floor:") != said(old, "data:", "floor:")
    one_line(train(tmp_path / "old", "--resume", "--max-iters", "40"), 2, "data file differs")


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
def test_token_id_run_samples_ids_and_refuses_other_vocab_sizes(tmp_path):
    """(synth_tokens.py in a process of its own: the command's one such test here; the rest in this one.)"""
    data = tmp_path / "tokens.bin"
    r = run_script("synth_tokens.py", "--vocab-size", "300", "--tokens", "50000", "--out", str(data))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "run"
    r = run_cli("train.py", "--data", str(data), "--out-dir", str(out), "--max-iters", "20",
                "--eval-interval", "10", "--sample-tokens", "10", "--plot")
    assert r.returncode == 0, r.stderr
    # no characters to label and V x V too big to draw: only the loss curves
    assert (out / "loss.png").is_file() and not (out / "transitions.png").exists() and "no transitions.png" in r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["vocab_size"] == 300 and s["loss"] == "gather" and len(s["sample"].split()) == 11
    a = run_cli("sample.py", "--checkpoint", str(out), "--prompt", "7 8", "--num-tokens", "20")
    assert a.returncode == 0, a.stderr
    ids = [int(t) for t in a.stdout.split()]
    assert ids[:2] == [7, 8] and len(ids) == 22 and all(0 <= i < 300 for i in ids)
    for prompt, msg in (("ROMEO", "whitespace-separated integers"), ("300", "token ids must be in [0, 300)")):
        b = run_cli("sample.py", "--checkpoint", str(out), "--prompt", prompt)
        assert b.returncode == 2 and msg in b.stderr and len(b.stderr.strip().splitlines()) == 1, b.stderr
    c = run_cli("train.py", "--data", str(data), "--out-dir", str(out), "--resume", "--vocab-size", "320")
    assert c.returncode == 2 and "checkpoint table is 300x300 but this data has a vocabulary of 320" in c.stderr
