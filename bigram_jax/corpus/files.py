"""Where a corpus comes from: a file path, or tinyshakespeare (a local copy, the cache, else a verified download),
and a text file read whole as UTF-8."""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from bigram_jax.errors import UserError
from bigram_jax.store.cache import cache_dir
from bigram_jax.store.files import open_checked

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def resolve_corpus(data: str) -> Path:
    """A path for `data`: a file path, or 'tinyshakespeare' via $BIGRAM_JAX_DATA, cache, then download."""
    if data != "tinyshakespeare":
        return Path(data)
    if os.environ.get("BIGRAM_JAX_DATA"):
        return Path(os.environ["BIGRAM_JAX_DATA"])
    cached = cache_dir() / "tinyshakespeare.txt"
    if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == TINYSHAKESPEARE_SHA256:
        return cached
    try:
        with urllib.request.urlopen(TINYSHAKESPEARE_URL, timeout=30) as r:
            raw = r.read()
    except OSError as e:
        raise UserError(f"cannot download tinyshakespeare ({e}); pass --data PATH or set "
                        "BIGRAM_JAX_DATA to a local copy") from None
    if hashlib.sha256(raw).hexdigest() != TINYSHAKESPEARE_SHA256:
        raise UserError("downloaded tinyshakespeare fails its sha256 check; pass --data PATH "
                        "or set BIGRAM_JAX_DATA to a verified copy")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    tmp.write_bytes(raw)
    tmp.replace(cached)  # atomic: a crash never leaves a half-written cache file
    return cached


def load_text(path: Path) -> tuple[str, str]:
    """Read a UTF-8 corpus; returns (text, sha256). Missing, empty or non-UTF-8 files are UserErrors."""
    try:  # checked on the open file (no size limit: a corpus is as large as it is): a FIFO, /dev/zero refused
        with open_checked(path, "data file") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read data file {path}: {e.strerror or e}") from None
    if not raw:
        raise UserError(f"data file is empty: {path}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"data file is not UTF-8 text: {path} (bad byte at offset {e.start})") from None
    if "\x00" in text:
        raise UserError(f"data file looks binary (NUL bytes): {path}")
    return text, hashlib.sha256(raw).hexdigest()
