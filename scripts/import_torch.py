"""Import a table between a bigram_jax checkpoint and a torch state_dict: see `python scripts/import_torch.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from torch_ref.cli import import_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(import_main())
