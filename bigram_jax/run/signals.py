"""Stop signals: which ones stop a run, the handlers that end a process at once, and a call that stays
interruptible while it waits on a long compiled program. Nothing is installed on import: the entry point
(cli/guard.py's `command`, scripts/*.py) or the run (StopRequests, below) installs handlers, scoped."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

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


class StopRequests:
    """While entered, the stop signals ask the run to stop after its current chunk (`signum` is set; after a
    hang-up the dead terminal's output is muted first); on exit the handlers found are put back. Handlers can
    be set from the main thread only: elsewhere nothing is caught."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict = {}

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            detach_hung_up_terminal()
        self.signum = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._old = set_stop_handlers(self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
