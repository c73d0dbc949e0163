"""A synthetic token-id corpus with a known bigram structure, to try large vocabularies, sharding and big files.

Each token is the previous one plus a random step d in 1..K (mod V), with P(d) proportional to 1/d: every row
of the true table has K successors, and the best possible loss is the entropy of d.

    python scripts/synth_tokens.py --vocab-size 8000 --tokens 4000000 --out data/synth.bin
    python scripts/train.py --data data/synth.bin --model-parallel 4 ...
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

CHUNK = 1 << 22  # tokens drawn and written at a time: a 2B-token file needs no more memory than a small one


def synth_chunks(vocab_size: int, tokens: int, successors: int, seed: int) -> Iterator[np.ndarray]:
    """The walk's ids, CHUNK at a time (int64): from a random start, steps 1..successors with P(d) ~ 1/d."""
    p = 1.0 / np.arange(1, successors + 1)
    rng = np.random.default_rng(seed)
    last = int(rng.integers(vocab_size))  # a random start: the walk's first token is one step after it
    for lo in range(0, tokens, CHUNK):
        d = rng.choice(np.arange(1, successors + 1), size=min(CHUNK, tokens - lo), p=p / p.sum())
        d[0] += last
        ids = np.cumsum(d) % vocab_size  # (n,)
        last = int(ids[-1])
        yield ids


def step_entropy(successors: int) -> float:
    """The best possible loss of the walk, in nats: the entropy of its step."""
    p = 1.0 / np.arange(1, successors + 1)
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def write_synth(out: Path, vocab_size: int, tokens: int, successors: int, seed: int) -> None:
    """Write the corpus as flat uint16 (.bin, nanoGPT's layout) or int32 .npy, in chunks."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".bin":
        with open(out, "wb") as f:
            for ids in synth_chunks(vocab_size, tokens, successors, seed):
                ids.astype("<u2").tofile(f)
        return
    arr = np.lib.format.open_memmap(out, mode="w+", dtype=np.int32, shape=(tokens,))
    lo = 0
    for ids in synth_chunks(vocab_size, tokens, successors, seed):
        arr[lo:lo + len(ids)] = ids
        lo += len(ids)
    arr.flush()


