"""The command line of scripts/synth_tokens.py (bigram-jax-synth-tokens): A synthetic token-id corpus with a known bigram structure, to try large vocabularies, sharding and big files."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from bigram_jax.cli.guard import OneLineParser, command, guard, prog
from bigram_jax.corpus.synth import step_entropy, write_synth
from bigram_jax.errors import UserError


def _main(argv: Sequence[str] | None) -> int:
    """Parse flags and write the file (never over an existing one)."""
    p = OneLineParser(prog=prog("synth_tokens.py"), description=__doc__.split(': ', 1)[1])
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


def synth_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/synth_tokens.py."""
    return guard(prog("synth_tokens.py"), lambda: _main(argv))


synth_command = command(synth_main)
