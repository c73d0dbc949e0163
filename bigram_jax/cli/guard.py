"""The commands' common ground: a flag parser whose errors are one line, the guard that turns every error and stop
into one line on stderr and an exit status, and the console entry point. Imports nothing heavy, so `--help` and
flag errors answer before JAX is loaded."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Callable, NoReturn

from bigram_jax.errors import Interrupted, NonFinite, UserError
from bigram_jax.run.signals import install_stop_handlers


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage block) and exit status 2 (through `guard`), and a
    flag is taken only as spelled: no abbreviations (--lr is not --lr-schedule)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message)


def guard(prog: str, fn: Callable[[], int]) -> int:
    """Run `fn`, turning user errors and stop signals into one line on stderr and a nonzero status."""
    try:
        return fn()
    except UserError as e:
        print(f"{prog}: error: {e.cli or e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        name = signal.Signals(e.signum).name
        print(f"{prog}: stopped by {name} at step {e.step}; checkpoint saved. Resume with the same command "
              "plus --resume", file=sys.stderr)
        return 128 + e.signum
    except NonFinite as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # Ctrl-C where install_stop_handlers was not called (the library in-process)
        print(f"{prog}: stopped by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # whoever read stdout has gone (`sample.py | head`): nothing is left to say to it
        _mute_stdout()
        return 128 + signal.SIGPIPE
    except OSError as e:  # the file system said no: read-only, not a folder, disk full...
        where = f": {e.filename}" if e.filename else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


def _mute_stdout() -> None:
    """Send what is left of stdout to /dev/null: its reader has gone, and the final flush must not fail again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # stdout is no file (captured): nothing to mute
        pass


def exit_now(rc: int) -> NoReturn:
    """End a script's process with `rc` as soon as its output is flushed.

    By then every file is closed and every checkpoint finished (the job waits for orbax before it returns), so
    the interpreter's teardown has nothing left to save: it would only spend ~0.4 s unloading JAX and orbax.
    A process of a multi-process run exits the usual way: JAX's exit handler leaves the coordinator in order.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    parallel = sys.modules.get("bigram_jax.devices.parallel")
    if parallel is not None and getattr(parallel, "JOINED", False):
        sys.exit(rc)
    os._exit(rc)


_CONSOLE_NAME: list[str] = []  # the console command running (bigram-jax-train), set by `command`


def prog(script: str) -> str:
    """What usage lines and errors call the running command: its console name (bigram-jax-train) when it was
    started as one, else the script's (train.py)."""
    return _CONSOLE_NAME[0] if _CONSOLE_NAME else script


def command(main: Callable[[], int]) -> Callable[[], None]:
    """A console-script entry point (pyproject's [project.scripts]) that behaves as scripts/*.py do: stop
    handlers first, then `main`, then exit_now; its usage and errors name the command."""
    def run() -> None:
        _CONSOLE_NAME[:] = [os.path.basename(sys.argv[0])]
        install_stop_handlers()
        exit_now(main())

    run.__doc__ = f"Console entry point of {getattr(main, '__name__', 'main')}."
    return run
