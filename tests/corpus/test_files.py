"""Corpus files (bigram_jax/corpus/files.py): text files read, tinyshakespeare resolved and verified."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bigram_jax.corpus import files
from bigram_jax.errors import UserError


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


def test_load_text_refuses_a_fifo_and_a_device_at_once(tmp_path):
    """The text is read through the checked open (no size limit): a FIFO is refused, never waited on, and a device
    (/dev/zero would be read forever) as well, each one line naming the path."""
    from tests.store.test_files import _unblocked

    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    with _unblocked(fifo), pytest.raises(UserError, match=f"data file {fifo} is not a regular file"):
        files.load_text(fifo)
    if os.path.exists("/dev/zero"):
        with pytest.raises(UserError, match="data file /dev/zero is not a regular file"):
            files.load_text(Path("/dev/zero"))


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
