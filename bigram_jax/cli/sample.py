"""The command line of scripts/sample.py (bigram-jax-sample): text from a checkpoint, in its own tokenizer.

Only the samples go to stdout (one after another, each ending in a newline), so `sample.py | ...` reads text;
what is said about them (which sample, which step) goes to stderr.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from bigram_jax.cli.guard import OneLineParser, command, guard, prog
from bigram_jax.errors import UserError
from bigram_jax.run.signals import interruptible
from bigram_jax.store.files import read_checked

PROMPT_FILE_MAX = 64 << 20  # bytes: a prompt is encoded whole and held on the device; any real one is far less


def sample_parser() -> argparse.ArgumentParser:
    """Flags of scripts/sample.py."""
    p = OneLineParser(prog=prog("sample.py"), description="Sample text from a bigram-jax checkpoint.")
    p.add_argument("--checkpoint", metavar="DIR", help="a run's out-dir or its checkpoints folder (default: the "
                   "newest run under runs/bigram)")
    p.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", help="text to continue, in the run's tokenizer (default: token id 0, as the lecture); "
                   "a run with no tokenizer takes ids")
    g.add_argument("--prompt-file", metavar="F", help="read the prompt text from a UTF-8 file")
    g.add_argument("--prompt-ids", metavar="IDS", help="the prompt as token ids: '464 3290' (any run)")
    p.add_argument("--num-tokens", type=int, default=500, help="new tokens per sample (default: 500)")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (default: 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="divide the logits by T (default: 1.0)")
    p.add_argument("--top-k", type=int, help="sample only from the k most likely next tokens")
    p.add_argument("--seed", type=int, default=1337, help="same seed, same text (default: 1337)")
    p.add_argument("--sampler", choices=("categorical", "cdf"), default="categorical",
                   help="jax.random.categorical, or the equivalent inverse-CDF sampler (faster)")
    return p


def _prompt_text(args: argparse.Namespace) -> str | None:
    """The prompt text of --prompt or --prompt-file (None: neither was given)."""
    if args.prompt_file is None:
        if args.prompt is not None:  # argv's bytes that are not UTF-8 arrive as lone surrogates (surrogateescape)
            try:
                args.prompt.encode("utf-8")
            except UnicodeEncodeError as e:
                raise UserError(f"--prompt is not UTF-8 text (an undecodable byte at character {e.start + 1})") from None
        return args.prompt
    raw = read_checked(args.prompt_file, "prompt file", PROMPT_FILE_MAX)  # a FIFO, /dev/zero, a huge file: one line
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"prompt file is not UTF-8 text: {args.prompt_file}") from None


def _prompt_ids(args: argparse.Namespace, tok: Any, V: int) -> Any:
    """The prompt as ids: --prompt-ids, the text encoded by the run's tokenizer, or id 0 (the lecture's)."""
    import numpy as np

    from bigram_jax.corpus.tokenizers import TokenIds

    text = _prompt_text(args)
    if text is None and args.prompt_ids is None:
        return np.zeros(1, np.int32)  # row 0: the lecture's '\n' (for a compact table, its smallest id)
    if text is None:  # the tokenizer's ids; a compact table (--compact-vocab) maps them to its rows
        compact = getattr(tok, "rows_of", None)
        return compact(TokenIds(tok.base.vocab_size).encode(args.prompt_ids)) if compact else \
            TokenIds(V).encode(args.prompt_ids)
    if not text:
        raise UserError("the prompt is empty: give at least one character")
    ids = tok.encode(text)  # (a run with no tokenizer reads its text as ids, as --prompt-ids)
    if len(ids) == 0:
        raise UserError(f"the prompt {text[:40]!r} encodes to no tokens")
    return ids


def _sample(argv: Sequence[str] | None) -> int:
    """Load params from a checkpoint and print samples."""
    args = sample_parser().parse_args(argv)
    if not 0 <= args.num_tokens < 2**31 or not 1 <= args.num_samples < 2**31:
        raise UserError("--num-tokens must be >= 0 and --num-samples >= 1 (each below 2**31)")
    if not 0 <= args.seed < 2**32:  # jax.random.key keeps only the low 32 bits without x64
        raise UserError(f"--seed must be in [0, 2**32), got {args.seed}")
    import jax
    import numpy as np

    from bigram_jax.checkpoint.load import load_checkpoint
    from bigram_jax.compile import programs
    from bigram_jax.corpus.tokenizers import show
    from bigram_jax.devices.memory import check_fits
    from bigram_jax.sampling import generate
    from bigram_jax.store.run_folders import RUNS, latest_run

    # ids out (int32) and the draws' keys and uniforms (8 and 4 bytes a token), before anything is loaded
    check_fits({"samples": 4.0 * args.num_samples * args.num_tokens, "keys": 12.0 * args.num_tokens})
    ck = load_checkpoint(args.checkpoint or latest_run(RUNS), args.step)
    tok = ck.tokenizer
    prompt = _prompt_ids(args, tok, ck.meta["vocab_size"])  # (T,)
    # the prompt's copies and the samples that extend them (int32), the host's copy of the new ids, the draws' keys
    S, T, N = args.num_samples, len(prompt), args.num_tokens
    check_fits({"prompt copies": 4.0 * S * T, "samples": 4.0 * S * (T + N), "new ids": 4.0 * S * N,
                "keys": 12.0 * N})
    idx = np.tile(prompt, (S, 1))  # (S, T)
    out = interruptible(lambda: generate(ck.params, jax.random.key(args.seed), idx, args.num_tokens,
                                         temperature=args.temperature, top_k=args.top_k, sampler=args.sampler,
                                         run=programs.run_sample))
    out = np.asarray(out)
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} (step {ck.step}, seed {args.seed}) ---", file=sys.stderr, flush=True)
        print(show(tok, out[i]), flush=True)
    return 0


def sample_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/sample.py."""
    return guard(prog("sample.py"), lambda: _sample(argv))


sample_command = command(sample_main)
