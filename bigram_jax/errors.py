"""User errors and stops as one line on stderr: the exception types, the flag parser and the guard of every entry point.

Imports nothing heavy, so `--help` and flag errors answer before JAX is loaded.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Callable, NoReturn


class UserError(Exception):
    """A problem with the user's input: reported as one line on stderr, never a traceback."""


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int):
        super().__init__(signum, step)
        self.signum, self.step = signum, step


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage block) and exit status 2 (through `guard`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message)


def guard(prog: str, fn: Callable[[], int]) -> int:
    """Run `fn`, turning user errors and stop signals into one line on stderr and a nonzero status."""
    try:
        return fn()
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        name = signal.Signals(e.signum).name
        print(f"{prog}: stopped by {name} at step {e.step}; checkpoint saved. Resume with the same command "
              "plus --resume", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def exit_now(rc: int) -> NoReturn:
    """End a script's process with `rc` as soon as its output is flushed.

    By then every file is closed and every checkpoint finished (the job waits for orbax before it returns), so
    the interpreter's teardown has nothing left to save: it would only spend ~0.4 s unloading JAX and orbax.
    A process of a multi-process run exits the usual way: JAX's exit handler leaves the coordinator in order.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    parallel = sys.modules.get("bigram_jax.parallel")
    if parallel is not None and getattr(parallel, "JOINED", False):
        sys.exit(rc)
    os._exit(rc)
