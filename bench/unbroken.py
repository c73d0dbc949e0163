"""The unbroken-text section: the peak memory of encoding a large text that has no line break at all (issue 28:
memory bounded for any text, whatever its line structure; its budget is 1.5 GB for any 300 MB text).

The text is tinyshakespeare with its line breaks made spaces, repeated, written in chunks into a temporary folder;
the tokenizer is tokenize.py's byte-level BPE tokenizer.json, trained here on the corpus (no download). The corpus
is loaded as a run loads it (encoded into an empty cache, then counted) in a process of its own: its peak RSS
(ru_maxrss) is the figure. A refusal is recorded with its line, not raised: the page then says what happened.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from .context import Ctx
from .paths import ROOT
from .timing import run_process
from .tokenize import BPE_VOCAB, _tokenizer

BUDGET_MIB = 1.5 * 1000**3 / 2**20  # the bound for any 300 MB text, in MiB

# a run's corpus set-up, alone: the streaming encoding into the cache, then the token file's counts
LOAD = """
import json, sys, time
from bigram_jax.config import make_config
from bigram_jax.corpus.load import load_corpus
t = time.perf_counter()
c = load_corpus(make_config({"data": sys.argv[2], "tokenizer": sys.argv[1]}))
json.dump({"load_s": time.perf_counter() - t, "tokens": len(c.train) + len(c.val)}, open(sys.argv[3], "w"))
"""


def unbroken_text(corpus_text: str, path: Path, mb: float) -> int:
    """The corpus without line breaks (each made a space), repeated to at least `mb` MB, written a copy at a time;
    its size in bytes. One line: no cut at a line break anywhere."""
    raw, size = corpus_text.replace("\r", " ").replace("\n", " ").encode(), 0
    with open(path, "wb") as f:
        while size < mb * 1e6:
            f.write(raw)
            size += len(raw)
    return size


def sec_unbroken(c: Ctx) -> dict:
    """Peak RSS, seconds and tokens of loading (encoding, then counting) a text of one line."""
    with tempfile.TemporaryDirectory() as tmp:
        tok, text, out = Path(tmp) / "tokenizer.json", Path(tmp) / "one_line.txt", Path(tmp) / "out.json"
        _tokenizer(c.corpus.path.read_text(encoding="utf-8"), tok)
        size = unbroken_text(c.corpus.path.read_text(encoding="utf-8"), text, c.sizes.unbroken_mb)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": f"{tmp}/cache"}
        figures: dict = {"text_mb": size / 1e6, "line_breaks": 0, "bpe_vocab": BPE_VOCAB, "cores": os.cpu_count(),
                         "budget_mib": BUDGET_MIB}
        try:
            wall, rss = run_process([sys.executable, "-c", LOAD, str(tok), str(text), str(out)], env)
        except RuntimeError as e:  # refused or failed: the page says so, with the line it ended with
            lines = str(e).strip().splitlines()
            return {**figures, "error": lines[-1][:300] if lines else "failed"}
        done = json.loads(out.read_text())
    return {**figures, **done, "wall_s": wall, "peak_rss_mib": rss, "mb_per_s": size / 1e6 / done["load_s"]}
