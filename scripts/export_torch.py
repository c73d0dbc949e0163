"""Export a table between a bigram_jax checkpoint and a torch state_dict: see `python scripts/export_torch.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from bigram_jax.cli.guard import exit_now, install_stop_handlers  # noqa: E402

install_stop_handlers()  # before the heavy imports: a stop while they run is one line too
from torch_ref.cli import export_main  # noqa: E402

if __name__ == "__main__":
    exit_now(export_main())
