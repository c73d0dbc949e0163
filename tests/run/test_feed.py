"""Corpora of any size: streamed counts, the cache, and the host-fed batch path against the device-resident one."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bigram_jax.corpus import token_file
from bigram_jax.config import make_config
from bigram_jax.counts import PairCounts
from bigram_jax.corpus.load import load_corpus
from bigram_jax.counts import PairCounter, dense_counts
from bigram_jax.errors import UserError
from tests.conftest import run_script
from tests.test_parallel import assert_same_losses, devices_env, train, two_processes


pytestmark = pytest.mark.usefixtures("own_cache")  # (conftest.py)


def _walk(n: int, V: int, seed: int = 0) -> np.ndarray:
    """A token stream with bigram structure (steps 1..7 mod V)."""
    return np.cumsum(np.random.default_rng(seed).integers(1, 8, n)) % V


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


def test_file_counts_match_the_in_memory_split(tmp_path, monkeypatch):
    ids = _walk(5000, 50)
    np.save(tmp_path / "t.npy", ids.astype(np.int32))
    monkeypatch.setattr(token_file, "CHUNK", 777)
    c = load_corpus(make_config({"data": str(tmp_path / "t.npy"), "vocab_size": 64}))
    assert isinstance(c.train, np.memmap) and c.vocab_size == 64  # mapped, never converted whole
    np.testing.assert_array_equal(c.train_counts.dense(), dense_counts(ids[:4500], 64))
    np.testing.assert_array_equal(c.val_counts.dense(), PairCounts.of(ids[4500:], 64).dense())


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


def test_a_file_that_changes_during_the_run_stops_it(tmp_path):
    from bigram_jax.run.feed import HostFeed
    from bigram_jax.devices.parallel import make_mesh
    from bigram_jax.train import init_state

    path = tmp_path / "t.bin"
    _walk(20_000, 40).astype("<u2").tofile(path)
    cfg = make_config({"data": str(path), "data_on": "host"})
    corpus = load_corpus(cfg)
    state = init_state(cfg, 40)
    feed = HostFeed(corpus, cfg, state, make_mesh(cfg, 40))
    try:
        state, _ = feed.advance(state, 0, 10)
        with open(path, "r+b") as f:  # truncated mid-run
            f.truncate(20_000)
        with pytest.raises(UserError, match="changed during the run"):
            for step in range(10, 10 * 64, 64):  # past the blocks gathered before the change
                state, _ = feed.advance(state, step, 64)
    finally:
        feed.close()


@pytest.mark.parametrize("data, loss", [("shakespeare", "counts"), ("tokens", "counts"), ("tokens", "gather")])
def test_host_fed_and_device_resident_runs_are_bit_identical(tmp_path, shakespeare_path, data, loss):
    path = shakespeare_path
    if data == "tokens":
        path = tmp_path / "t.bin"
        _walk(300_000, 300).astype("<u2").tofile(path)
    args = ("--data", str(path), "--loss", loss, "--max-iters", "300", "--eval-interval", "100",
            "--sample-tokens", "50")
    s_dev, rows_dev, _ = train(tmp_path / "device", *args, "--data-on", "device")
    s_host, rows_host, _ = train(tmp_path / "host", *args, "--data-on", "host")
    assert_same_losses(rows_dev, rows_host, 0.0)  # bit-identical, not merely close
    # batch losses are summed per chunk, and chunks follow the clock: equal up to the order of the additions
    np.testing.assert_allclose([r["batch_loss"] or 0 for r in rows_dev], [r["batch_loss"] or 0 for r in rows_host],
                               rtol=1e-6)
    assert s_dev["sample"] == s_host["sample"]


def test_resume_on_the_host_fed_path_continues_the_same_run(tmp_path):
    path = tmp_path / "t.bin"
    _walk(100_000, 64).astype("<u2").tofile(path)
    args = ("--data", str(path), "--data-on", "host", "--eval-interval", "50", "--sample-tokens", "0")
    _, full, _ = train(tmp_path / "full", *args, "--max-iters", "130")
    train(tmp_path / "half", *args, "--max-iters", "70")
    r = run_script("train.py", "--resume", "--out-dir", str(tmp_path / "half"), "--data-on", "host",
                   "--max-iters", "130")
    assert r.returncode == 0, r.stderr
    half = [json.loads(x) for x in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in half] == [0, 50, 70, 100, 130]  # the first run ended at 70
    assert_same_losses(full, [r for r in half if r["step"] != 70], 0.0)


def test_host_fed_four_devices_and_two_processes_match_one_device(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, _walk(200_000, 256).astype(np.int32))
    args = ("--data", str(path), "--data-on", "host", "--max-iters", "200", "--eval-interval", "100",
            "--sample-tokens", "0")
    _, one, _ = train(tmp_path / "one", *args)
    _, four, out = train(tmp_path / "four", *args, devices=4)
    assert "over 4 cpu device(s)" in out
    assert_same_losses(one, four, 1e-5)
    p0, p1 = two_processes(tmp_path / "two", *args)
    assert p0.returncode == p1.returncode == 0, p0.stderr + p1.stderr
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert_same_losses(one, two, 1e-5)


def test_bad_token_files_mid_size(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00" * 100 + b"\x07")
    np.arange(100, dtype="<u2").tofile(tmp_path / "wide.bin")
    for argv, msg in ((["--data", str(tmp_path / "odd.bin")], "is odd"),
                      (["--data", str(tmp_path / "wide.bin"), "--vocab-size", "50"], "out of range for vocab_size 50"),
                      (["--data", "/dev/zero"], "not a regular file")):
        r = run_script("train.py", *argv, "--out-dir", str(tmp_path / "o"), env=devices_env(1))
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


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
