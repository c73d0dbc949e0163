"""Sample the lecture's bigram model: see `python scripts/sample.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from bigram_jax.cli.guard import exit_now, install_stop_handlers  # noqa: E402

install_stop_handlers()  # before the heavy imports: a stop while they run is one line too
from bigram_jax.cli.sample import sample_main  # noqa: E402

if __name__ == "__main__":
    exit_now(sample_main())
