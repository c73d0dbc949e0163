"""The corpus-size section: memory and speed of whole runs on synthetic token files from 1M to 2B tokens.

Each file is written in chunks by scripts/synth_tokens.py into a temporary folder, with its own empty cache, so
a file's first run pays for its streaming pass (identity, counts) and its second run finds them cached.
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

V, GPT2_V = 4096, 50304  # the issue's synthetic vocabulary; GPT-2's, padded as nanoGPT pads it


def _synth(path: Path, tokens: int, vocab: int, env: dict) -> None:
    """Write a synthetic corpus (a random walk with known bigram structure), in chunks."""
    run_process([sys.executable, "scripts/synth_tokens.py", "--vocab-size", str(vocab), "--tokens", str(tokens),
                 "--out", str(path)], env)


def _train(path: Path, out: Path, steps: int, env: dict) -> dict:
    """One whole run at B = 64, T = 256: wall, peak RSS, and the summary's speed and set-up figures."""
    wall, rss = run_process([sys.executable, "scripts/train.py", "--data", str(path), "--batch-size", "64",
                             "--block-size", "256", "--max-iters", str(steps), "--eval-interval", str(steps),
                             "--sample-tokens", "0", "--out-dir", str(out)], env)
    s = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "peak_rss_mib": rss, "tokens_per_s": s["tokens_per_second"],
            "corpus_s": s["corpus_seconds"], "compile_s": s["compile_seconds"]}


def _count_only(path: Path, vocab: int, env: dict) -> dict:
    """Load (identity and sparse counts) a large-vocabulary file: wall and peak RSS of that alone."""
    code = ("from bigram_jax.config import make_config; from bigram_jax.corpus.load import load_corpus; "
            f"c = load_corpus(make_config({{'data': {str(path)!r}, 'vocab_size': {vocab}}})); "
            "print(len(c.train_counts.n))")
    wall, rss = run_process([sys.executable, "-c", code], env)
    return {"wall_s": wall, "peak_rss_mib": rss}


def sec_corpus(c: Ctx) -> dict:
    """tokens/s, peak RSS and set-up seconds against the corpus size; a GPT-2-sized vocabulary counted sparse."""
    sizes, steps = c.sizes.corpus_tokens, c.sizes.corpus_steps
    out: dict = {"vocab_size": V, "batch_size": 64, "block_size": 256, "steps": steps, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": f"{tmp}/cache"}
        for n in sizes:
            path = Path(tmp) / f"t{n}.bin"
            _synth(path, n, V, env)
            first = _train(path, Path(tmp) / f"first{n}", steps, env)
            second = _train(path, Path(tmp) / f"second{n}", steps, env)  # the streaming pass is cached now
            out["runs"][str(n)] = {"first": first, "second": second}
            path.unlink()  # the largest files are GBs: one at a time on disk
        n = c.sizes.corpus_gpt2
        path = Path(tmp) / "gpt2.bin"
        _synth(path, n, GPT2_V, env)
        out["gpt2_vocab"] = {"tokens": n, "vocab_size": GPT2_V, **_count_only(path, GPT2_V, env)}
    base = out["runs"][str(sizes[0])]["second"]["tokens_per_s"]
    out["speed_vs_smallest"] = {k: r["second"]["tokens_per_s"] / base for k, r in out["runs"].items()}
    return out
