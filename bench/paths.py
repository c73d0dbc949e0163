"""Where the benchmark runs from, and how it names paths in what it shows (never an absolute path)."""
from __future__ import annotations

from pathlib import Path

# The clone: the whole-job section runs scripts/train.py from here, with the repo on PYTHONPATH
ROOT = Path(__file__).resolve().parents[1]


def shown(path: str | Path) -> str:
    """A path as the committed page may show it: relative to the repo inside it, else the bare file name.

    The page is committed, so a path of the machine that wrote it (home folders, data caches) must not leak.
    """
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return p.name


def scrub(text: str, paths: list[str | Path]) -> str:
    """`text` with every absolute form of `paths` (and of the repo) replaced by its shown form.

    A last guard: every figure is formatted from data, but a command line or an error could still carry a path.
    """
    absolute = {str(Path(p).resolve()) for p in paths} | {str(ROOT)}
    for p in sorted(absolute, key=len, reverse=True):  # longest first: a folder inside another is replaced whole
        if len(Path(p).parts) > 1:  # never "/": replacing it would mangle every "a / b" of the tables
            text = text.replace(p, shown(p))  # the repo itself shows as "."
    return text
