"""User errors and stops as one line on stderr: the exception types, the flag parser and the guard of every entry point.

Imports nothing heavy, so `--help` and flag errors answer before JAX is loaded.
"""
from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
import threading
from pathlib import Path
from typing import Callable, NoReturn


class UserError(Exception):
    """A problem with the user's input: reported as one line on stderr, never a traceback. `cli`: the same line
    in the commands' terms (flags), where the message itself speaks of the Python API."""

    def __init__(self, message: str, cli: str | None = None):
        super().__init__(message)
        self.cli = cli


def first_line(e: BaseException) -> str:
    """An exception as 'Type: the first line of its message', short: for a one-line error about a failure that
    came from a library (orbax, tokenizers, tiktoken) rather than from the user."""
    msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int):
        super().__init__(signum, step)
        self.signum, self.step = signum, step


class NonFinite(Exception):
    """The training loss became NaN or infinite: the run stopped, its last finite checkpoint kept."""


# a request to stop: a kill, Ctrl-C, a closed terminal or dropped ssh connection, and the signals batch schedulers
# send ahead of pre-emption (SLURM's --signal, for one). The run saves a checkpoint and exits with 128 + signal.
# SIGQUIT (Ctrl-\) keeps Python's default, the emergency exit: the process ends at once and saves nothing.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def detach_hung_up_terminal() -> None:
    """After a hang-up, send what the process still writes to a dead terminal to /dev/null: a write there fails
    (EIO), and must not cost the checkpoint the stop is saving. A live terminal, a file or a pipe stays as it is."""
    import errno
    import termios

    for fd in (1, 2):
        try:
            termios.tcgetattr(fd)
        except termios.error as e:
            if e.args[0] == errno.EIO:  # a terminal that has hung up (a file or a pipe says ENOTTY)
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, fd)
                os.close(null)


def _stop_now(signum: int, frame: object) -> None:
    """End the process at once, with one line. Raising instead could land inside a call from C++ (importing
    JAX, compiling) that cannot pass a Python exception on, and abort the process with a C++ trace."""
    prog = os.path.basename(sys.argv[0]) or "bigram_jax"
    if signum == signal.SIGHUP:
        detach_hung_up_terminal()
    try:
        sys.stdout.flush()
        os.write(2, f"{prog}: stopped by {signal.Signals(signum).name}\n".encode())
    except (OSError, ValueError):  # nowhere left to say it
        pass
    os._exit(128 + signum)


def set_stop_handlers(handler: Callable) -> dict:
    """`handler` for every stop signal but one the parent ignores (nohup: it stays ignored); the handlers it
    replaced, by signal, to put back. Main thread only."""
    return {s: signal.signal(s, handler) for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}


def install_stop_handlers() -> None:
    """From now on the stop signals end the process at once with one line and 128 + signal. The training loop
    swaps in its own handlers while it runs (they save a checkpoint first); outside it there is nothing to save:
    no checkpoint is being written. Scripts call this before any heavy import."""
    set_stop_handlers(_stop_now)


def interruptible(fn: Callable, *args: object) -> object:
    """fn(*args) in a worker thread, the main thread waiting in short steps: a stop signal is honoured within
    a tenth of a second even while fn sits in one long compiled call (Python runs handlers between bytecodes)."""
    box: dict = {}

    def work() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001  (re-raised in the caller's thread)
            box["error"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.1)
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_regular(path: Path, what: str = "data file") -> os.stat_result:
    """The file's stat; a missing file, a folder, a FIFO or a device is a UserError (reading them would hang)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {path} is not a regular file")
    return st


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
    except OSError as e:  # the file system said no: read-only, not a folder, disk full...
        where = f": {e.filename}" if e.filename else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


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
