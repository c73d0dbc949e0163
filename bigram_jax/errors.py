"""The exceptions every layer raises: a user's error, a stop by signal, a loss gone non-finite.

The commands (cli/guard.py) turn each into one line on stderr and an exit status. Imports nothing heavy.
"""
from __future__ import annotations


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
