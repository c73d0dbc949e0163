"""What a run trusts, round three (issue 20): the caches (compiled programs, token scans and counts, text encodings).

Each case runs real processes on real files and compares runs against runs: a run on a tampered or stale cache
must compute what a run on an empty cache computes. Every test points XDG_CACHE_HOME at a folder of its own.
Checkpoint metadata, the program key and the smaller cases are in test_trust_runs.py; signals, locks and
process-wide state in test_trust_signals.py.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, _shakespeare, run_script
from tests.test_faults import one_line

FAST = ["--sample-tokens", "0", "--eval-interval", "50"]


pytestmark = pytest.mark.usefixtures("own_cache")  # (conftest.py)


def env_of(**over: str | None) -> dict:
    """The environment of a child process, with `over` on top (None removes a variable)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()), "JAX_PLATFORMS": "cpu",
           "PYTHONUNBUFFERED": "1", **over}
    return {k: v for k, v in env.items() if v is not None}


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`r`, which must have succeeded."""
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    return r


def train(out: Path, *args: str, cache: Path | None = None, **kw) -> subprocess.CompletedProcess:
    """scripts/train.py into `out` (with the cache `cache`, else the test's own)."""
    return run_script("train.py", "--out-dir", str(out), *args, env={"XDG_CACHE_HOME": str(cache)} if cache else None,
                      **kw)


def said(r: subprocess.CompletedProcess, *prefixes: str) -> list[str]:
    """The lines of r's stdout that start with one of `prefixes`."""
    return [line for line in r.stdout.splitlines() if line.startswith(prefixes)]


def losses(out: Path) -> list[tuple]:
    """(step, exact train loss, exact val loss) of every row of a run's metrics.jsonl."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in rows]


def big_text_code(out: Path, data: Path, *args: str, chunk: int = 4099, patch: str = "") -> str:
    """A `python -c` program: train_main on `data` through the large-text path (streamed, cached), `patch` first."""
    argv = ["--data", str(data), "--out-dir", str(out), "--max-iters", "100", *FAST, *args]
    return ("import sys\nfrom bigram_jax import text_file\n"
            f"text_file.IN_MEMORY_MAX, text_file.CHUNK = 1000, {chunk}\n{patch}\n"
            f"from bigram_jax.cli.train import train_main\nsys.exit(train_main({argv!r}))\n")


def py(code: str, cache: Path | None = None, **kw) -> subprocess.CompletedProcess:
    """`python -c code` with the repo importable (and the cache `cache`, else the test's own)."""
    env = env_of(**({"XDG_CACHE_HOME": str(cache)} if cache else {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, **kw)


def rewrite_keeping_times(path: Path, data: bytes) -> None:
    """Overwrite `path` in place with `data` (the same size), then put back its access and modification times."""
    st = path.stat()
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def write_ids(path: Path, top: int, seed: int, n: int = 200_000) -> None:
    """`n` random uint16 token ids in [0, top], each of 0 and `top` at least once."""
    ids = np.random.default_rng(seed).integers(0, top + 1, n).astype("<u2")
    ids[:2] = (0, top)
    path.write_bytes(ids.tobytes())


# 1. the program cache ----------------------------------------------------------------------------------------

def test_a_program_entry_under_another_entrys_name_is_not_run(tmp_path):
    """Issue 20, case 1: a program-cache entry copied over another config's entry (lr 0.01's programs stored under
    lr 0.1's names) is not run: the lr 0.1 rerun computes exactly what the first lr 0.1 run did."""
    a, b = tmp_path / "A", tmp_path / "B"
    for lr, cache in (("0.01", a), ("0.1", b)):
        ok(train(tmp_path / f"lr{lr}", "--learning-rate", lr, "--max-iters", "100", *FAST, cache=cache))
    pa, pb = a / "bigram_jax" / "programs", b / "bigram_jax" / "programs"
    names_a, names_b = {p.name for p in pa.glob("*.bin")}, {p.name for p in pb.glob("*.bin")}
    only_a = sorted((pa / n for n in names_a - names_b), key=lambda p: p.stat().st_size)
    only_b = sorted((pb / n for n in names_b - names_a), key=lambda p: p.stat().st_size)
    assert only_a and len(only_a) == len(only_b), (names_a, names_b)  # the programs that depend on the config
    for src, dst in zip(only_a, only_b):
        shutil.copyfile(src, dst)
    ok(train(tmp_path / "again", "--learning-rate", "0.1", "--max-iters", "100", *FAST, cache=b))
    assert losses(tmp_path / "again") == losses(tmp_path / "lr0.1") != losses(tmp_path / "lr0.01")


# 2. stale token and text caches ------------------------------------------------------------------------------

def test_a_token_file_rewritten_with_its_size_and_mtime_put_back_is_read_again(tmp_path):
    """Issue 20, case 2 (token ids): a.bin rewritten in place with other ids (up to 60), its size and mtime put
    back: a run on the old cache prints the data and floor lines of a run on an empty cache, and --resume of the
    run made on the old content is refused (one line, exit 2, "data file differs")."""
    data = tmp_path / "a.bin"
    write_ids(data, 49, seed=0)
    # --vocab-size 64: the resume below meets the same table size and is judged by the data alone
    old = ok(train(tmp_path / "old", "--data", str(data), "--max-iters", "20", "--vocab-size", "64", *FAST))
    new = tmp_path / "new.bin"
    write_ids(new, 60, seed=1)
    rewrite_keeping_times(data, new.read_bytes())
    args = ["--data", str(data), "--max-iters", "20", *FAST]
    stale = ok(train(tmp_path / "stale", *args))
    fresh = ok(train(tmp_path / "fresh", *args, cache=tmp_path / "empty"))
    assert "vocab 61" in said(fresh, "data:")[0]
    assert said(stale, "data:", "floor:") == said(fresh, "data:", "floor:") != said(old, "data:", "floor:")
    one_line(train(tmp_path / "old", "--resume", "--max-iters", "40"), 2, "data file differs")


def test_a_large_text_rewritten_with_its_size_and_mtime_put_back_is_encoded_again(tmp_path, shakespeare_path):
    """Issue 20, case 2 (large text): the last tenth of a streamed text replaced by other text of the same byte
    length (a new character '~'), its mtime put back: the rerun prints what a run on an empty cache prints."""
    data = tmp_path / "big.txt"
    shutil.copyfile(shakespeare_path, data)
    raw = data.read_bytes()
    assert b"~" not in raw
    tail = len(raw) // 10
    first = ok(py(big_text_code(tmp_path / "first", data)))
    rewrite_keeping_times(data, raw[:-tail] + (b"~zz\n" * tail)[:tail])
    stale = ok(py(big_text_code(tmp_path / "stale", data)))
    fresh = ok(py(big_text_code(tmp_path / "fresh", data), cache=tmp_path / "empty"))
    assert said(stale, "data:", "floor:") == said(fresh, "data:", "floor:") != said(first, "data:", "floor:")


def test_a_token_cache_entry_copied_over_another_of_the_same_file_is_not_used(tmp_path, own_cache):
    """Issue 20, case 3: the val split's counts entry copied over the train split's (same file, same key): the
    rerun's exact losses and floor line equal the first run's."""
    data = tmp_path / "a.bin"
    write_ids(data, 49, seed=0)
    args = ["--data", str(data), "--max-iters", "100", *FAST]
    first = ok(train(tmp_path / "first", *args))
    (folder,) = (own_cache / "bigram_jax" / "tokens").iterdir()
    entries = {int(p.name.split("_")[1]): p for p in folder.iterdir() if p.name.startswith("counts_")}
    assert len(entries) == 2 and 0 in entries, sorted(folder.iterdir())
    shutil.copyfile(entries[max(entries)], entries[0])
    again = ok(train(tmp_path / "again", *args))
    assert said(again, "floor:") == said(first, "floor:")
    assert losses(tmp_path / "again") == losses(tmp_path / "first")
    assert all(t != v for _, t, v in losses(tmp_path / "first"))


# 4. a text that grows while it is encoded -------------------------------------------------------------------

GROW = """
_pass1 = text_file._vocab_and_sha
def _grown(path, *a, **k):
    out = _pass1(path, *a, **k)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\\u03a9\\u03a9 zzz\\n" * 1000)
    return out
text_file._vocab_and_sha = _grown
"""


def test_a_text_that_grows_while_it_is_encoded_is_refused(tmp_path, shakespeare_path):
    """Issue 20, case 4: text with new characters appended between the large-text path's two passes: exit 2 and
    one line "changed while it was encoded" (no wrong ids, no traceback)."""
    data = tmp_path / "big.txt"
    shutil.copyfile(shakespeare_path, data)
    r = py(big_text_code(tmp_path / "o", data, patch=GROW))
    one_line(r, 2, "changed while it was encoded")
    assert data.stat().st_size > shakespeare_path.stat().st_size  # the patch did append


# 8. two first runs on one large text at once ------------------------------------------------------------------

TOGETHER = """
import time
_pass1 = text_file._vocab_and_sha
def _at_once(*a, **k):
    time.sleep(max(0.0, {start} - time.time()))
    return _pass1(*a, **k)
text_file._vocab_and_sha = _at_once
"""


@pytest.mark.parametrize("attempt", range(3))
def test_two_first_runs_on_one_large_text_at_once_agree(tmp_path, shakespeare_path, attempt):
    """Issue 20, case 8: two runs started together on the same new large text and the same empty cache (their
    encoding begun at the same moment) both succeed and print the same data, floor and step lines."""
    data = tmp_path / "big.txt"
    shutil.copyfile(shakespeare_path, data)
    start = TOGETHER.format(start=time.time() + 8)  # both have imported JAX by then
    procs = [subprocess.Popen([sys.executable, "-c", big_text_code(tmp_path / f"o{k}", data, patch=start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_of())
             for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, (p.returncode, err[-3000:])
    lines = [[x for x in o.splitlines() if x.startswith(("data:", "floor:", "step"))] for o, _ in outs]
    assert lines[0] == lines[1] and len(lines[0]) >= 4, lines
