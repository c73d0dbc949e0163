"""The job (bigram_jax/run/job.py): a non-finite loss, the floor line, nothing changed process-wide."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from bigram_jax import load_checkpoint
from tests.conftest import ROOT, env_of, ok, one_line, run_cli, said

FAST = ["--sample-tokens", "0", "--eval-interval", "100"]
FAST_50 = ["--sample-tokens", "0", "--eval-interval", "50"]


def test_invalid_optimizer_settings_are_refused_and_a_non_finite_loss_stops_the_run(tmp_path):
    for argv, msg in ((["--eps", "0"], "eps must be positive"), (["--beta2", "0.99999999"], "rounds to 1.0"),
                      (["--weight-decay", "1e10"], "below 1")):
        one_line(run_cli("train.py", *argv, "--out-dir", str(tmp_path / "o")), 2, msg)
    out = tmp_path / "nan"
    r = run_cli("train.py", "--out-dir", str(out), "--learning-rate", "1e38", "--weight-decay", "0", "--max-iters", "600",
                "--checkpoint-every", "100", *FAST)
    one_line(r, 3, "non-finite")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]  # valid JSON: no bare NaN
    assert all(np.isfinite(row["train_loss"]) for row in rows)
    for step in (int(p.name) for p in (out / "checkpoints").glob("[0-9]*")):
        assert np.isfinite(np.asarray(load_checkpoint(out, step).params["params"]["token_embedding_table"][
            "embedding"])).all()


@pytest.mark.usefixtures("own_cache")
def test_the_floor_of_certain_and_of_one_character_corpora_reads_well(tmp_path):
    """Issue 20, case 14a: a corpus of certain transitions has no negative zero ("-0.0000") in its floor line; a
    one-character corpus has no exponent ("add-1e+03 smoothing") in it."""
    for name, text, bad in (("ab", "ab" * 2000, r"(?<!\w)-0\.0"), ("a", "a" * 2000, r"e\+0")):
        (tmp_path / f"{name}.txt").write_text(text)
        r = ok(run_cli("train.py", "--out-dir", str(tmp_path / name), "--data", str(tmp_path / f"{name}.txt"),
                       "--max-iters", "10", *FAST_50))
        (floor,) = said(r, "floor:")
        assert not re.search(bad, floor), floor


SNAPSHOT = r'''
import ast, importlib, logging, pathlib, pkgutil, signal, sys, threading, warnings
import jax, absl.logging
import jax._src.monitoring as monitoring

OURS = ("bigram_jax", "torch_ref")
LISTENERS = [n for n in dir(monitoring) if n.startswith("_") and n.endswith("_listeners")]


def import_dependencies():
    """Every third-party module the packages name, imported first: what they change is not ours."""
    names = set()
    for f in (p for pkg in OURS for p in pathlib.Path(pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    for name in sorted(names):
        if name.split(".")[0] not in OURS + ("tests",) and name.split(".")[0] not in sys.stdlib_module_names:
            try:
                importlib.import_module(name)
            except Exception:
                pass


def snapshot():
    sigs = {}
    for s in signal.valid_signals():
        if s not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                sigs[int(s)] = signal.getsignal(s)
            except (ValueError, OSError):
                pass
    loggers = {n: lg.level for n, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    loggers[""] = logging.root.level
    return {"threading.excepthook": threading.excepthook, "sys.excepthook": sys.excepthook,
            "sys.unraisablehook": sys.unraisablehook, "signals": sigs, "loggers": loggers,
            "warnings.filters": list(warnings.filters),
            "monitoring": {n: list(getattr(monitoring, n)) for n in LISTENERS}}


def changes(a, b):
    out = []
    for k in a:
        if k in ("signals", "monitoring", "loggers"):
            new = [n for n in b[k] if n not in a[k]]
            if k == "loggers":  # a new logger of a module imported late is fine at NOTSET
                new = [n for n in new if b[k][n] != logging.NOTSET]
            out += [f"{k} {n!r}: {a[k].get(n)} -> {b[k].get(n)}" for n in list(a[k]) + new if a[k].get(n) != b[k].get(n)]
        elif a[k] != b[k]:
            out.append(f"{k}: {a[k]!r} -> {b[k]!r}")
    return out


import_dependencies()
before = snapshot()
'''


IMPORT_ALL = SNAPSHOT + r'''
for pkg in OURS:
    module = importlib.import_module(pkg)
    for m in pkgutil.walk_packages(module.__path__, pkg + "."):
        importlib.import_module(m.name)
found = changes(before, snapshot())
print("\n".join(found))
sys.exit(1 if found else 0)
'''


TRAIN = SNAPSHOT + r'''
from bigram_jax import train_and_evaluate
from bigram_jax.config import make_config
train_and_evaluate(make_config({"max_iters": 20, "eval_interval": 10, "checkpoint_every": 10, "sample_tokens": 0,
                                "out_dir": sys.argv[1], "data": sys.argv[2]}))
found = changes(before, snapshot())
print("\n".join(found))
sys.exit(1 if found else 0)
'''


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
@pytest.mark.parametrize("program", [pytest.param("import_all", marks=pytest.mark.torch), "train"])  # all: torch_ref too
def test_importing_and_running_the_library_changes_nothing_process_wide(tmp_path, shakespeare_path, program):
    """Issue 20, case 13: importing every module of bigram_jax and torch_ref, and then (second case) a whole
    train_and_evaluate with checkpoints, leave the excepthooks, signal handlers, logger levels, warning filters
    and JAX's monitoring listeners as they were."""
    code = IMPORT_ALL if program == "import_all" else TRAIN
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), str(shakespeare_path)], cwd=ROOT,
                       capture_output=True, text=True, env=env_of(), timeout=300)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
