"""Benchmark bigram_jax against the lecture's torch code; writes bench.json and docs/benchmarks.md.

See `python scripts/bench.py --help`; the machinery is bigram_jax.bench.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from bigram_jax.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
