"""A synthetic token-id corpus with a known bigram structure, to try large vocabularies, sharding and big files.

Each token is the previous one plus a random step d in 1..K (mod V), with P(d) proportional to 1/d: every row
of the true table has K successors, and the best possible loss is the entropy of d.

    python scripts/synth_tokens.py --vocab-size 8000 --tokens 4000000 --out data/synth.bin
    python scripts/train.py --data data/synth.bin --model-parallel 4 ...
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from bigram_jax.cli.guard import OneLineParser, command, guard, prog

from bigram_jax.errors import UserError
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


def _main(argv: Sequence[str] | None) -> int:
    """Parse flags and write the file (never over an existing one)."""
    p = OneLineParser(prog=prog("synth_tokens.py"), description=__doc__.splitlines()[0])
    p.add_argument("--vocab-size", type=int, default=8000, help="V (default: 8000)")
    p.add_argument("--tokens", type=int, default=4_000_000, help="corpus length (default: 4,000,000)")
    p.add_argument("--successors", type=int, default=16, help="K, successors of each token (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed (default: 0)")
    p.add_argument("--out", required=True, help="FILE.bin (flat uint16, as nanoGPT's train.bin) or FILE.npy")
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.suffix not in (".bin", ".npy"):
        raise UserError(f"--out must end in .bin or .npy, got {out.name}")
    top = 65536 if out.suffix == ".bin" else 2**31 - 1
    if not 2 <= a.vocab_size <= top:
        raise UserError(f"--vocab-size must be in [2, {top}], got {a.vocab_size}")
    if a.tokens < 2 or not 1 <= a.successors < a.vocab_size:
        raise UserError("--tokens must be >= 2 and --successors in [1, vocab-size)")
    if a.seed < 0:
        raise UserError(f"--seed must be >= 0, got {a.seed}")
    if out.exists():
        raise UserError(f"{out} exists; choose another --out (nothing was changed)")
    try:
        write_synth(out, a.vocab_size, a.tokens, a.successors, a.seed)
    except OSError as e:
        out.unlink(missing_ok=True)  # never leave a partial corpus behind
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {out}: {a.tokens:,} tokens, vocab {a.vocab_size}, {a.successors} successors per token; "
          f"best possible loss {step_entropy(a.successors):.4f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/synth_tokens.py."""
    return guard(prog("synth_tokens.py"), lambda: _main(argv))


synth_command = command(main)
