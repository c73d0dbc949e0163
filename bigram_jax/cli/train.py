"""The command line of scripts/train.py (bigram-jax-train): flags -> config -> library calls, errors as one line."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

from bigram_jax.cli.config_file import load_config_file
from bigram_jax.cli.guard import OneLineParser, command, guard, prog
from bigram_jax.config import CHOICES, FIELDS, TYPES, from_flag, make_config
from bigram_jax.errors import UserError

STARTED = time.time()  # this module's import: the work of a command begins about here


def train_parser() -> argparse.ArgumentParser:
    """Every Config field as a --flag (values typed and checked by make_config), plus run controls."""
    p = OneLineParser(prog=prog("train.py"), description="Train the lecture's bigram model (defaults = the "
                      "lecture's run). Each setting is also spelled as nanoGPT spells it: --batch_size=64.")
    p.add_argument("--config", metavar="FILE", help="JSON or TOML file of settings; flags override it")
    for name, field in FIELDS.items():
        metavar = "{" + ",".join(CHOICES[name]) + "}" if name in CHOICES else TYPES[name].__name__.upper()
        switch = {"nargs": "?", "const": "true", "metavar": "true|false"} if TYPES[name] is bool else \
            {"metavar": metavar}  # a switch alone: on
        p.add_argument("--" + name.replace("_", "-"), dest=name, **switch,
                       help=f"{field.metadata['help']} (default: {field.default})")
        if "_" in name:  # nanoGPT's spelling (its configurator's --key=value), kept out of --help
            p.add_argument("--" + name, dest=name, help=argparse.SUPPRESS, **switch)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out-dir "
                   "(default: the newest run under runs/bigram)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="resume even if the checkpoint's vocabulary or data file differ")
    p.add_argument("--plot", action="store_true",
                   help="write loss.png and transitions.png into --out-dir at the end (needs matplotlib)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events into OUT_DIR/tensorboard (needs tensorboardX)")
    g = p.add_argument_group("several hosts (jax.distributed; on TPU pods and SLURM the three values come "
                             "from the environment)")
    g.add_argument("--distributed", action="store_true", help="join JAX's multi-process runtime first")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator")
    g.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")
    g.add_argument("--distributed-timeout", type=int, metavar="SECONDS",
                   help="give up joining after this long (default: JAX's, 300; a pod's hosts may start minutes apart)")
    return p


def _train(argv: Sequence[str] | None) -> int:
    """Parse, prepare and run one training job."""
    args = train_parser().parse_args(argv)
    overrides: dict[str, Any] = load_config_file(args.config) if args.config else {}
    overrides.update({k: from_flag(k, v) for k, v in vars(args).items() if k in FIELDS and v is not None})
    _check_run_flags(args, overrides)
    if not args.resume:
        make_config(overrides)  # every setting checked before anything is written
    if args.plot:  # a missing optional extra fails before training, not after
        from bigram_jax.run.plot import check_available

        check_available()
    if args.tensorboard:
        from bigram_jax.run.tblog import check_available as check_tensorboard

        check_tensorboard()
    if args.distributed:  # before anything touches a device
        from bigram_jax.devices.parallel import initialize

        initialize(args.coordinator, args.num_processes, args.process_id, args.distributed_timeout)
    else:  # a run of several processes keeps out of JAX's compilation cache (see _compile_cache)
        _compile_cache()
    from bigram_jax.checkpoint.resume import open_resume
    from bigram_jax.devices.parallel import is_primary
    from bigram_jax.run.job import train_and_evaluate
    from bigram_jax.store.run_folders import RUNS, latest_run

    resume = None
    if args.resume:  # the newest run unless named; locked before its checkpoints are opened
        overrides["out_dir"] = overrides.get("out_dir") or str(latest_run(RUNS))
        resume = open_resume(overrides, args.allow_mismatch)
    summary = train_and_evaluate(resume.cfg if resume else make_config(overrides), resume,
                                 tensorboard=args.tensorboard, started=STARTED)
    if args.plot and is_primary():  # after the run closed its checkpoints: the last one is complete on disk
        from bigram_jax.run.plot import write_plots

        for path in write_plots([Path(summary["out_dir"])], Path(summary["out_dir"])):
            print(f"wrote {path}")
    return 0


def _check_run_flags(args: argparse.Namespace, overrides: dict) -> None:
    """Flags that only make sense together, checked before anything starts."""
    cluster = (args.coordinator, args.num_processes, args.process_id)
    if args.allow_mismatch and not args.resume:
        raise UserError("--allow-mismatch only makes sense with --resume")
    if any(v is not None for v in cluster) and not args.distributed:
        raise UserError("--coordinator, --num-processes and --process-id need --distributed")
    if args.distributed and not overrides.get("out_dir"):  # each process would number a folder of its own
        raise UserError("--distributed needs --out-dir: every process must write to the same run folder")
    if args.plot and args.distributed:  # plotting reads the checkpoint in one process: orbax would wait for all
        raise UserError("--plot does not combine with --distributed: run scripts/plot.py --run OUT_DIR afterwards")
    if args.num_processes is not None and args.num_processes < 1:
        raise UserError(f"--num-processes must be >= 1, got {args.num_processes}")
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or 2**31):
        raise UserError(f"--process-id must be in [0, --num-processes), got {args.process_id}")
    if args.distributed_timeout is not None and args.distributed_timeout <= 0:
        raise UserError(f"--distributed-timeout must be positive, got {args.distributed_timeout}")
    if args.coordinator is not None:
        from bigram_jax.devices.parallel import check_coordinator

        check_coordinator(args.coordinator)


def _compile_cache() -> None:
    """Keep compiled programs in the user cache: a second run skips most of its compile time.

    Not for a run of several processes, as programs.py: on CPU JAX's cache key holds each process's own topology
    and only process 0 writes, so process 0 would run executables from the cache while the others compile their
    own; with jaxlib 0.12 (XLA:CPU) such a mix never completes the loop's first collective across processes."""
    import warnings

    import jax

    from bigram_jax.store.cache import cache_dir

    # a damaged or unwritable entry of XLA's cache costs a compile, nothing else: JAX's two-line warning (with an
    # internal path) is for the command's process to drop, not for the library
    warnings.filterwarnings("ignore", message="Error (reading|writing) persistent compilation cache entry")
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/train.py."""
    return guard(prog("train.py"), lambda: _train(argv))


train_command = command(train_main)
