"""Where runs live and whose they are: numbered run folders (runs/bigram/version_N), the newest one, and the
lock that makes a folder one run's for that run's life."""
from __future__ import annotations

from pathlib import Path
from typing import IO

from bigram_jax.errors import UserError
from bigram_jax.store import locks

RUNS = Path("runs/bigram")  # where runs go without --out-dir: version_0, version_1, ... (as Lightning numbers them)


RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard")


LOCK = ".lock"


def holds_run(out_dir: Path) -> list[str]:
    """The files of a run that `out_dir` already holds."""
    return [name for name in RUN_FILES if (out_dir / name).exists()]


def claim(out_dir: Path, fresh: bool) -> IO:
    """Make `out_dir` this run's: refuse a fresh run into a folder that holds a run, then lock it for the run's
    life (a second run into it is refused while this one lives). Returns the lock: close it when the run ends
    (a killed run's lock goes with its process)."""
    if fresh:
        check_fresh(out_dir)
    elif out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = locks.acquire(out_dir / LOCK, wait=False)  # (the file stays empty)
    except OSError as e:
        raise UserError(f"cannot lock the run folder: {out_dir / LOCK} is not a plain file ({e.strerror}); "
                        "move it aside") from None
    if lock is None:
        raise UserError(f"{out_dir} is in use by another run: wait for it to end, or give another out_dir",
                        cli=f"{out_dir} is in use by another run: wait for it to end, or choose another --out-dir")
    return lock


def check_fresh(out_dir: Path) -> None:
    """Refuse a new run into a folder that holds a run (or is a file): checked before the corpus is read, and
    again when the folder is claimed."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir} is a file, not a folder")
    found = holds_run(out_dir)
    if found:
        held = f"{out_dir} already holds a run ({', '.join(found)})"
        raise UserError(f"{held}: continue it with train_and_evaluate(cfg, resume=open_resume({{'out_dir': ...}})), "
                        "or give another out_dir (nothing was changed)",
                        cli=f"{held}: pass --resume to continue it, or choose another --out-dir (nothing was changed)")


def next_run(base: Path) -> Path:
    """A new numbered run folder under `base` (version_0, version_1, ...), created at once so that two runs
    started together never pick the same one."""
    n = 1 + max((v for v in map(_version, base.glob("version_*")) if v is not None), default=-1)
    while True:
        path = base / f"version_{n}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1


def latest_run(base: Path) -> Path:
    """The newest numbered run under `base` (or `base` itself, a run of a version that did not number them)."""
    runs = sorted((v, p) for p in base.glob("version_*") if (v := _version(p)) is not None)
    if runs:
        return runs[-1][1]
    if holds_run(base):
        return base
    raise UserError(f"no run found in {base}: train one first (python scripts/train.py), or name it")


def _version(p: Path) -> int | None:
    """N of a folder named version_N."""
    tail = p.name.removeprefix("version_")
    return int(tail) if p.is_dir() and tail.isdigit() else None
