"""`python -m torch_ref.parity`: every parity check of bigram_jax against the lecture's PyTorch model, as a table.

The public API lives here too: the conversions (torch_ref.convert) and the checks (torch_ref.checks).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch

from bigram_jax.cli.guard import OneLineParser, guard
from bigram_jax.config import Config
from bigram_jax.corpus.files import load_text, resolve_corpus
from bigram_jax.corpus.tokenizers import CharTokenizer
from bigram_jax.data import split
from bigram_jax.errors import UserError
from torch_ref.checks import (
    CASES64,
    P_MIN,
    Result,
    check_checkpoint,
    check_logits,
    check_loss_grad,
    check_sampling,
    check_training,
    cpu_highest,
    random_model,
)
from torch_ref.convert import (
    flax_to_torch,
    load_torch_state_dict,
    save_torch_state_dict,
    torch_to_flax,
)
from torch_ref.stats import topk_probs

__all__ = ["CASES64", "P_MIN", "Result", "check_checkpoint", "check_logits", "check_loss_grad", "check_sampling",
           "check_training", "cpu_highest", "flax_to_torch", "load_torch_state_dict", "main", "random_model",
           "report", "run_all", "save_torch_state_dict", "topk_probs", "torch_to_flax"]


def report(results: list[Result]) -> str:
    """The results as a markdown table."""
    def fmt(x: float) -> str:
        return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.3g}"

    lines = ["| check | measured | tolerance | result |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.check} | {fmt(r.figure)} | {'>=' if r.at_least else '<='} {r.bound:g} | "
                     f"{'PASS' if r.passed else 'FAIL'} |")
    return "\n".join(lines)


def run_all(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int, seed: int, steps: int = 200
            ) -> list[Result]:
    """Every check, in the order of the report; the checkpoint check reuses the float32-trained table."""
    train_results, params = check_training(train_ids, vocab_size, seed, steps)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = check_checkpoint(params, val_ids, Path(tmp), seed)
    return [check_logits(seed), *check_loss_grad(seed), *check_loss_grad(seed, CASES64, float64=True),
            *train_results, *check_sampling(seed), *ckpt]


PROG = "python -m torch_ref.parity"


def _run(argv: list[str] | None) -> int:
    """Parse the flags, load the corpus, run every check and print the table; UserError on bad input."""
    p = OneLineParser(prog=PROG, description="Check bigram_jax against the lecture's PyTorch model.")
    p.add_argument("--data", default="tinyshakespeare", help="corpus for the training and checkpoint checks "
                   "(default: tinyshakespeare via $BIGRAM_JAX_DATA, the cache, or a download)")
    p.add_argument("--seed", type=int, default=1337, help="seed of every random draw (default: 1337)")
    p.add_argument("--steps", type=int, default=200, help="AdamW steps of the training check (default: 200)")
    args = p.parse_args(argv)
    if not 0 <= args.seed < 2**32 or args.steps < 1:  # jax.random.key keeps only 32 bits without x64
        raise UserError(f"--seed must be in [0, 2**32) and --steps >= 1, got {args.seed} and {args.steps}")
    path = resolve_corpus(args.data)
    text, _ = load_text(path)
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = split(tok.encode(text))
    if len(train_ids) <= Config().block_size or len(val_ids) < 2:
        raise UserError(f"data file too short for the checks: {len(text)} characters")
    t0 = time.perf_counter()
    results = run_all(train_ids, val_ids, tok.vocab_size, args.seed, args.steps)
    failed = sum(not r.passed for r in results)
    print(f"bigram_jax (jax {jax.__version__}, CPU backend, highest precision) vs torch_ref (torch "
          f"{torch.__version__}); seed {args.seed}; data {path} (V={tok.vocab_size})\n")
    print(report(results))
    print(f"\n{len(results) - failed}/{len(results)} checks passed in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run every check on real data, print the table; 0 if all pass, 1 if any fails, 2 on a user error."""
    return guard(PROG, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
