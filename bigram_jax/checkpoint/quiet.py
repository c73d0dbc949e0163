"""orbax's noise, muted while checkpoints are open, and only then: absl's log lines, and the errors of a failed
save's writer threads (the failure reaches the user once, as one line, through Checkpoints._failure: orbax re-raises
it in check_for_errors, the next save and close). Importing this changes nothing."""
from __future__ import annotations

import logging
import sys
import threading
from typing import Any

_MUTE_LOCK = threading.Lock()
_muted: list = []  # the hooks and absl level found when the first open Checkpoints muted orbax; [] when none is open
_open_count = [0]


def _from_writer(tb: Any) -> bool:
    """Did an exception pass through orbax's writers (orbax itself, or the asyncio loop it writes with)?"""
    while tb is not None:
        if any(name in tb.tb_frame.f_code.co_filename for name in ("orbax", "asyncio")):
            return True
        tb = tb.tb_next
    return False


def _quiet_thread(args: threading.ExceptHookArgs) -> None:
    """Leave the writers' thread errors to _failure; any other thread's error is printed as usual."""
    if not _from_writer(args.exc_traceback):
        (_muted[1] if _muted else threading.__excepthook__)(args)


def _quiet_unraisable(args: Any) -> None:
    """The same for what a failed save's abandoned coroutines raise when they are collected."""
    if not _from_writer(args.exc_traceback):
        (_muted[2] if _muted else sys.__unraisablehook__)(args)


def mute(on: bool) -> None:
    """Mute orbax's noise when the first Checkpoints opens; put everything back as it was when the last closes."""
    absl = logging.getLogger("absl")
    with _MUTE_LOCK:
        _open_count[0] += 1 if on else -1
        if on and _open_count[0] == 1:
            _muted[:] = [absl.level, threading.excepthook, sys.unraisablehook]
            absl.setLevel(logging.CRITICAL)
            threading.excepthook, sys.unraisablehook = _quiet_thread, _quiet_unraisable
        elif not on and _open_count[0] == 0:
            absl.setLevel(_muted[0])
            threading.excepthook, sys.unraisablehook = _muted[1], _muted[2]
            _muted.clear()
