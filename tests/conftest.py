"""Shared fixtures: the real tinyshakespeare corpus, key-reuse checking, CLI runners."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
jax.config.update("jax_debug_key_reuse", True)  # a reused PRNG key fails the test


def _shakespeare() -> Path:
    """$BIGRAM_JAX_DATA, else the verified copy beside the repo (CI), else the library's cache/download."""
    env = os.environ.get("BIGRAM_JAX_DATA")
    shared = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
    if env or shared.is_file():
        return Path(env) if env else shared
    from bigram_jax.corpus.files import resolve_corpus

    return resolve_corpus("tinyshakespeare")


os.environ.setdefault("BIGRAM_JAX_DATA", str(_shakespeare()))  # in-process CLI runs resolve the corpus too


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """This test's own library cache, in-process and (through os.environ) in its subprocesses: what one test
    caches never helps another. Files of tests that must not share one use it for every test (`pytestmark`)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    """Path of tinyshakespeare; the tests need the real corpus."""
    p = _shakespeare()
    if not p.is_file():
        pytest.fail(f"tinyshakespeare not found at {p}: set BIGRAM_JAX_DATA")
    return p


@pytest.fixture(scope="session")
def shakespeare_text(shakespeare_path: Path) -> str:
    """The corpus text."""
    return shakespeare_path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def shakespeare(shakespeare_text: str) -> tuple:
    """(its character tokenizer, train ids, val ids): the lecture's corpus and split."""
    from bigram_jax.corpus.tokenizers import CharTokenizer
    from bigram_jax.data import split

    tok = CharTokenizer.from_text(shakespeare_text)
    return tok, *split(tok.encode(shakespeare_text))


def run_script(script: str, *args: str, timeout: float = 300, env: dict | None = None,
               **kw) -> subprocess.CompletedProcess:
    """Run scripts/<script> in a subprocess with the repo importable (plus `env`); capture text output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()),
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


def popen_script(script: str, *args: str) -> subprocess.Popen:
    """Start scripts/<script> in the background (for signal tests)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()), "JAX_PLATFORMS": "cpu",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
