"""The command line of scripts/plot.py (bigram-jax-plot): loss.png and transitions.png of one or more runs."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from bigram_jax.cli.guard import OneLineParser, command, guard, prog
from bigram_jax.errors import UserError


def plot_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/plot.py."""
    def run() -> int:
        p = OneLineParser(prog=prog("plot.py"), description="Write loss.png (all runs overlaid) and transitions.png "
                    "(the first run's learned vs count-based transition table).")
        p.add_argument("--run", action="append", metavar="DIR",
                       help="a training run's --out-dir; repeat to overlay runs in loss.png (default: the newest run "
                       "under runs/bigram)")
        p.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: the first --run)")
        args = p.parse_args(argv)
        from bigram_jax.run.plot import write_plots
        from bigram_jax.store.run_folders import RUNS, latest_run

        runs = [Path(r) for r in args.run] if args.run else [latest_run(RUNS)]
        if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
            raise UserError(f"--out {args.out} is a file, not a folder")
        for path in write_plots(runs, Path(args.out) if args.out else runs[0]):
            print(path)
        return 0

    return guard(prog("plot.py"), run)


plot_command = command(plot_main)
