"""Benchmark bigram_jax against the lecture's torch code (torch_ref.model), side by side in one run.

    python scripts/bench.py [--quick] [--only compile,train,scale,generate,eval,job,limits] [--repeats N] [--out F]

Each figure is the median of --repeats timed blocks after a warm-up, compile time kept apart and
`block_until_ready` before every clock read. The contenders of one measurement are interleaved repeat by
repeat, so on a shared, noisy machine the ratios of one run are the figures to quote. Writes --out (JSON)
and prints markdown tables.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_parts.cli import main  # noqa: E402  (scripts/, this file's folder, is on sys.path when run)

if __name__ == "__main__":
    sys.exit(main())
