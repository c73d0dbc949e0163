"""The per-user cache (bigram_jax/store/cache.py): damaged or swapped entries never used; no HOME."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from bigram_jax.config import make_config
from bigram_jax.corpus.load import load_corpus
from tests.conftest import ROOT, _walk, env_of, losses, ok, run_cli, said, train, write_ids

FAST = ["--sample-tokens", "0", "--eval-interval", "10"]

pytestmark = pytest.mark.usefixtures("own_cache")


def test_a_damaged_cache_entry_is_rebuilt_never_trusted(tmp_path):
    path = tmp_path / "t.bin"
    _walk(3000, 40).astype("<u2").tofile(path)
    cfg = make_config({"data": str(path)})
    good = load_corpus(cfg)
    entries = sorted((tmp_path / "cache" / "bigram_jax" / "tokens").rglob("*.entry"))
    assert len(entries) == 3  # the scan, and each split's counts
    for e in entries:
        raw = bytearray(e.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # one flipped bit in the middle of each entry
        e.write_bytes(bytes(raw))
    again = load_corpus(cfg)
    assert again.sha256 == good.sha256
    np.testing.assert_array_equal(again.train_counts.dense(), good.train_counts.dense())


def test_a_token_cache_entry_copied_over_another_of_the_same_file_is_not_used(tmp_path, own_cache):
    """Issue 20, case 3: the val split's counts entry copied over the train split's (same file, same key): the
    rerun's exact losses and floor line equal the first run's."""
    data = tmp_path / "a.bin"
    write_ids(data, 49, seed=0)
    args = ["--data", str(data), "--max-iters", "20", *FAST]
    first = ok(run_cli("train.py", "--out-dir", str(tmp_path / "first"), *args))
    (folder,) = (own_cache / "bigram_jax" / "tokens").iterdir()
    entries = {int(p.name.split("_")[1]): p for p in folder.iterdir() if p.name.startswith("counts_")}
    assert len(entries) == 2 and 0 in entries, sorted(folder.iterdir())
    shutil.copyfile(entries[max(entries)], entries[0])
    again = ok(run_cli("train.py", "--out-dir", str(tmp_path / "again"), *args))
    assert said(again, "floor:") == said(first, "floor:")
    assert losses(tmp_path / "again") == losses(tmp_path / "first")
    assert all(t != v for _, t, v in losses(tmp_path / "first"))


@pytest.mark.e2e
def test_a_program_entry_under_another_entrys_name_is_not_run(tmp_path):
    """Issue 20, case 1: a program-cache entry copied over another config's entry (lr 0.01's programs stored under
    lr 0.1's names) is not run: the lr 0.1 rerun computes exactly what the first lr 0.1 run did. (Processes: what
    a fresh process finds in the cache is the subject; this one holds its programs in memory.)"""
    a, b = tmp_path / "A", tmp_path / "B"
    for lr, cache in (("0.01", a), ("0.1", b)):
        ok(train(tmp_path / f"lr{lr}", "--learning-rate", lr, "--max-iters", "20", *FAST, cache=cache))
    pa, pb = a / "bigram_jax" / "programs", b / "bigram_jax" / "programs"
    names_a, names_b = {p.name for p in pa.glob("*.bin")}, {p.name for p in pb.glob("*.bin")}
    only_a = sorted((pa / n for n in names_a - names_b), key=lambda p: p.stat().st_size)
    only_b = sorted((pb / n for n in names_b - names_a), key=lambda p: p.stat().st_size)
    assert only_a and len(only_a) == len(only_b), (names_a, names_b)  # the programs that depend on the config
    for src, dst in zip(only_a, only_b):
        shutil.copyfile(src, dst)
    ok(train(tmp_path / "again", "--learning-rate", "0.1", "--max-iters", "20", *FAST, cache=b))
    assert losses(tmp_path / "again") == losses(tmp_path / "lr0.1") != losses(tmp_path / "lr0.01")


@pytest.mark.e2e
def test_without_home_the_cache_folder_is_named(tmp_path):
    """Issue 20, case 14c: with HOME and XDG_CACHE_HOME unset a run succeeds and a note on stderr names where it
    caches, mentioning HOME. (It caches in the passwd home of the user running the tests.) A process of its own:
    the note is said once per process, when the cache is first asked for."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--out-dir", str(tmp_path / "o"),
                        "--max-iters", "10", *FAST], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env=env_of(HOME=None, XDG_CACHE_HOME=None))
    ok(r)
    assert any("HOME" in line for line in r.stderr.splitlines()), r.stderr


def test_an_entry_whose_header_nests_deep_is_a_bad_entry(tmp_path):
    """Issue 28 item 8: a header nested 100,000 deep, resealed with a valid checksum, made json.loads raise
    RecursionError in every run; it is a bad entry: not read, and rebuilt over."""
    import hashlib

    from bigram_jax.store import cache

    path, key = tmp_path / "e.entry", {"kind": "test", "name": "x"}
    assert cache.write(path, key, {"a": np.arange(5)})
    header = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    body = header + np.arange(5).tobytes()
    path.write_bytes(cache._MAGIC + hashlib.sha256(body).digest() + body)  # sealed: only the header is wrong
    assert cache.read(path, key) is None
    assert cache.write(path, key, {"a": np.arange(5)})  # rebuilt, then read as any entry
    np.testing.assert_array_equal(cache.read(path, key)["a"], np.arange(5))


def test_a_fifo_in_the_cache_is_no_entry(tmp_path):
    """A FIFO where an entry goes is not waited on: read says there is no entry (before: read_bytes blocked)."""
    import os

    from bigram_jax.store import cache
    from tests.store.test_files import _unblocked

    os.mkfifo(tmp_path / "e.entry")
    with _unblocked(tmp_path / "e.entry"):  # a hang guard: the old read would wait here for a writer
        assert cache.read(tmp_path / "e.entry", {"kind": "test"}) is None
