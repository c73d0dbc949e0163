"""Write a synthetic token-id corpus with a known bigram structure, to try large vocabularies and sharding.

Each token is the previous one plus a random step d in 1..K (mod V), with P(d) proportional to 1/d: every row
of the true table has K successors, and the best possible loss is the entropy of d (printed).

    python scripts/synth_tokens.py --vocab-size 8000 --tokens 4000000 --out data/synth.bin
    python scripts/train.py --data data/synth.bin --model-parallel 4 ...
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigram_jax.cli import _guard, _Parser  # noqa: E402
from bigram_jax.config import UserError  # noqa: E402


def synth(vocab_size: int, tokens: int, successors: int, seed: int) -> tuple[np.ndarray, float]:
    """(ids, entropy of the step in nats): a random walk mod V with steps 1..successors drawn with P(d) ~ 1/d."""
    p = 1.0 / np.arange(1, successors + 1)
    p /= p.sum()
    rng = np.random.default_rng(seed)
    d = rng.choice(np.arange(1, successors + 1), size=tokens, p=p)
    d[0] = rng.integers(vocab_size)  # a random start
    return (np.cumsum(d) % vocab_size).astype(np.int64), float(-(p * np.log(p)).sum())


def main(argv: list[str] | None = None) -> int:
    """Parse flags and write the file (never over an existing one)."""
    p = _Parser(prog="synth_tokens.py", description=__doc__.splitlines()[0])
    p.add_argument("--vocab-size", type=int, default=8000, help="V (default: 8000)")
    p.add_argument("--tokens", type=int, default=4_000_000, help="corpus length (default: 4,000,000)")
    p.add_argument("--successors", type=int, default=16, help="K, successors of each token (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed (default: 0)")
    p.add_argument("--out", required=True, help="FILE.bin (flat uint16, as nanoGPT's train.bin) or FILE.npy")
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.suffix not in (".bin", ".npy"):
        raise UserError(f"--out must end in .bin or .npy, got {out.name}")
    if not 2 <= a.vocab_size <= (65536 if out.suffix == ".bin" else 2**31 - 1):
        raise UserError(f"--vocab-size must be in [2, {65536 if out.suffix == '.bin' else 2**31 - 1}], got {a.vocab_size}")
    if a.tokens < 2 or not 1 <= a.successors < a.vocab_size:
        raise UserError("--tokens must be >= 2 and --successors in [1, vocab-size)")
    if out.exists():
        raise UserError(f"{out} exists; choose another --out (nothing was changed)")
    ids, entropy = synth(a.vocab_size, a.tokens, a.successors, a.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".bin":
        ids.astype("<u2").tofile(out)
    else:
        np.save(out, ids.astype(np.int32))
    print(f"wrote {out}: {a.tokens:,} tokens, vocab {a.vocab_size}, {a.successors} successors per token; "
          f"best possible loss {entropy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(_guard("synth_tokens.py", main))
