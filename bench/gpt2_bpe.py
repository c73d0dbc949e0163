"""The section "nanoGPT's shakespeare with GPT-2 BPE" (issue 27): tinyshakespeare encoded with tiktoken's GPT-2
encoding and trained with --compact-vocab at nanoGPT's B = 64, T = 256, as one scripts/train.py process: tokens/s,
peak RSS, set-up seconds, the floors, how many of the tokenizer's ids the corpus uses.

Nothing is downloaded: the encoding must already lie in tiktoken's cache (TIKTOKEN_CACHE_DIR, else the temp
folder's data-gym-cache). The processes run with an unreachable proxy, so a missing file fails at once instead of
fetching it, and the section then says in one line that it was skipped and why.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .context import Ctx
from .paths import ROOT
from .timing import run_process

NAMES = ("r50k_base", "gpt2")  # the same ranks, pattern and end-of-text id: whichever is cached
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: a download attempt fails at once
OFFLINE = {k: UNREACHABLE for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")}
OFFLINE |= {"NO_PROXY": "", "no_proxy": ""}
B, T = 64, 256  # nanoGPT's shakespeare batch
IDS_USED = re.compile(r"([\d,]+) of (?:its |the tokenizer's )?([\d,]+) ids")


def offline_env(tmp: str) -> dict:
    """The children's environment: the repo importable, an empty cache of our own, no way to download."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": f"{tmp}/cache", **OFFLINE}


def cached_encoding(env: dict) -> str | None:
    """The first of NAMES that tiktoken loads from its cache alone (in a child, so nothing stays loaded)."""
    for name in NAMES:
        code = f"from bigram_jax.corpus.bpe import tiktoken_named; tiktoken_named({name!r})"
        if subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, check=False,
                          timeout=120).returncode == 0:
            return name
    return None


def has_compact_vocab() -> bool:
    """Whether scripts/train.py takes --compact-vocab (a config field: every field is a flag)."""
    from bigram_jax.config import FIELDS

    return "compact_vocab" in FIELDS


def skipped(why: str) -> dict:
    print(f"[gpt2_bpe: skipped: {why}]", file=sys.stderr, flush=True)
    return {"skipped": why}


def sec_gpt2_bpe(c: Ctx) -> dict:
    """One whole run: the summary's figures, the process's wall and peak RSS, the data line's ids used."""
    if not has_compact_vocab():
        return skipped("scripts/train.py has no --compact-vocab")
    with tempfile.TemporaryDirectory() as tmp:
        env = offline_env(tmp)
        name = cached_encoding(env)
        if name is None:
            return skipped(f"tiktoken's {' / '.join(NAMES)} BPE file is not in its cache (TIKTOKEN_CACHE_DIR or the "
                           "temp folder's data-gym-cache), and the bench downloads nothing")
        steps, out, log = c.sizes.gpt2_steps, Path(tmp) / "run", Path(tmp) / "stdout.txt"
        cmd = [sys.executable, "scripts/train.py", "--data", str(c.corpus.path), "--tokenizer", name,
               "--compact-vocab", "--batch-size", str(B), "--block-size", str(T), "--max-iters", str(steps),
               "--eval-interval", str(steps), "--sample-tokens", "0", "--out-dir", str(out)]
        wall, rss = run_process(cmd, env, stdout=str(log))
        s = json.loads((out / "summary.json").read_text())
        data = next((ln for ln in log.read_text().splitlines() if ln.startswith("data:")), "")
    used = IDS_USED.search(data)
    return {"tokenizer": name, "batch_size": B, "block_size": T, "steps": steps, "loss": s["loss"],
            "vocab_size": s["vocab_size"], "ids_used": int(used[1].replace(",", "")) if used else s["vocab_size"],
            "ids_of": int(used[2].replace(",", "")) if used else None,
            "tokens_per_s": s["tokens_per_second"], "corpus_s": s["corpus_seconds"], "compile_s": s["compile_seconds"],
            "wall_s": wall, "peak_rss_mib": rss, "floor_train_loss": s["floor_train_loss"],
            "floor_val_loss": s["floor_val_loss"], "train_loss": s["train_loss"], "val_loss": s["val_loss"]}
