"""What a run trusts, round three (issue 20), part two: stop signals, hang-ups, locks, run folders, checkpoint
rotation under a reader, and the process-wide state the library leaves alone. Real processes, real signals."""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, popen_script, run_script
from tests.test_faults import one_line
from tests.test_trust import env_of, ok, train
from tests.test_trust_runs import run  # noqa: F401  (test_trust_runs's finished run, a fixture)

LONG = ["--max-iters", "100000000", "--chunk-seconds", "0.05", "--sample-tokens", "0", "--eval-interval", "100"]

pytestmark = pytest.mark.usefixtures("own_cache")  # (conftest.py)


def steps(out: Path) -> list[int]:
    """The checkpoint steps a run folder holds."""
    return sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())


def wait_for(p: subprocess.Popen, text: str, seconds: float = 120) -> None:
    """Read p's stdout until a line starts with `text`."""
    deadline = time.time() + seconds
    for line in p.stdout:
        if line.startswith(text) or time.time() > deadline:
            return
    pytest.fail(f"the run ended before printing {text!r}: {p.wait()} {p.stderr.read()[-2000:]}")


def resumes(out: Path) -> None:
    """The run's latest checkpoint continues for 100 more steps."""
    ok(train(out, "--resume", "--max-iters", str(steps(out)[-1] + 100), "--sample-tokens", "0"))


# 7. stop signals ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2], ids=lambda s: s.name)
def test_hangup_and_user_signals_save_and_stop_as_sigterm_does(tmp_path, sig):
    """Issue 20, case 7: SIGHUP, SIGUSR1 and SIGUSR2 stop a run as SIGTERM does: a checkpoint is saved, one line
    says so, the exit status is 128 + the signal, and --resume continues."""
    out = tmp_path / "run"
    p = subprocess.Popen(train_after(at_default(sig), "--out-dir", str(out), *LONG), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env_of())
    try:
        wait_for(p, "step 100:")
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    one_line(subprocess.CompletedProcess(p.args, p.returncode, "", err), 128 + sig, f"stopped by {sig.name}",
             "checkpoint saved")
    assert steps(out)
    resumes(out)


def train_after(setup: str, *argv: str) -> list[str]:
    """A command line that runs the Python `setup` in the child, then becomes scripts/train.py `argv` (the same
    process: exec). Unlike preexec_fn, it needs no fork of this multithreaded (JAX) process."""
    then = "\nimport os, sys\nos.execv(sys.executable, [sys.executable] + sys.argv[1:])"
    return [sys.executable, "-c", setup + then, str(ROOT / "scripts" / "train.py"), *argv]


def at_default(sig: signal.Signals) -> str:
    """Python that puts `sig` back to its default action, so a run is tested as if started from a terminal even
    when the tests themselves run under nohup (which starts them, and so every run, with SIGHUP ignored)."""
    return f"import signal\nsignal.signal(signal.{sig.name}, signal.SIG_DFL)\n"


def test_a_hung_up_terminal_saves_and_stops_the_run(tmp_path):
    """Issue 20, case 7: a run whose controlling terminal (its stdin, stdout and stderr) hangs up gets SIGHUP and
    then fails every write to it: it still exits 129 within 30 s and leaves a checkpoint that --resume continues."""
    out = tmp_path / "run"
    master, slave = os.openpty()
    take_terminal = "import fcntl, termios\nfcntl.ioctl(0, termios.TIOCSCTTY, 0)"  # after setsid: stdin's pty
    take_terminal = at_default(signal.SIGHUP) + take_terminal
    p = subprocess.Popen(train_after(take_terminal, "--out-dir", str(out), *LONG), stdin=slave, stdout=slave,
                         stderr=slave, env=env_of(), start_new_session=True)
    os.close(slave)
    seen, deadline = b"", time.time() + 120
    try:
        while b"step 100:" not in seen and time.time() < deadline and p.poll() is None:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        assert b"step 100:" in seen, seen[-2000:]
    finally:
        os.close(master)  # the hang-up
    try:
        assert p.wait(timeout=30) == 128 + signal.SIGHUP, seen[-2000:]
    finally:
        p.kill()
    resumes(out)


def test_a_signal_the_parent_ignores_stays_ignored(tmp_path):
    """Issue 20, case 7: a run started with SIGHUP ignored (as under nohup) is not stopped by SIGHUP."""
    nohup = "import signal\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)"
    p = subprocess.Popen(train_after(nohup, "--out-dir", str(tmp_path / "run"), *LONG), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env_of())
    try:
        wait_for(p, "step 100:")
        p.send_signal(signal.SIGHUP)
        time.sleep(2.0)
        assert p.poll() is None, p.stderr.read()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + signal.SIGTERM, err
    finally:
        p.kill()


# 9. sample.py while a run rotates its checkpoints ---------------------------------------------------------------

def test_a_latest_checkpoint_deleted_under_the_loader_falls_back_to_the_one_before(run, tmp_path, monkeypatch):
    """Issue 20, case 9a: the latest step's folder disappears between picking it and reading it (a run rotating
    its checkpoints): load_checkpoint returns the step before instead of raising."""
    assert steps(run) == [100, 200, 300]
    from bigram_jax import load_checkpoint
    from bigram_jax.checkpoint.manager import Checkpoints

    d = tmp_path / "run"
    shutil.copytree(run, d)
    pick, deleted = Checkpoints.pick, []

    def pick_then_rotate(self, *a, **k):
        step = pick(self, *a, **k)
        if (a[0] if a else k.get("step")) is None and step == 300 and not deleted:
            shutil.rmtree(d / "checkpoints" / "300")
            deleted.append(step)
        return step

    monkeypatch.setattr(Checkpoints, "pick", pick_then_rotate)
    assert load_checkpoint(d).step == 200
    assert deleted


def test_sample_py_while_a_run_rotates_its_checkpoints(tmp_path):
    """Issue 20, case 9b: sample.py, ten times, on a run that saves every 20 steps and keeps one: every sample
    succeeds."""
    out = tmp_path / "run"
    p = popen_script("train.py", "--out-dir", str(out), "--max-iters", "100000000", "--checkpoint-every", "20",
                     "--keep-checkpoints", "1", "--chunk-seconds", "0.02", "--sample-tokens", "0", "--eval-interval",
                     "20")
    try:
        wait_for(p, "step 40:")
        results = [run_script("sample.py", "--checkpoint", str(out), "--num-tokens", "5") for _ in range(10)]
        assert p.poll() is None  # the run was rotating all along
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    bad = [(r.returncode, r.stderr[-500:]) for r in results if r.returncode != 0]
    assert not bad, bad


# 10. the Python API releases a finished run's lock -------------------------------------------------------------

def test_the_python_api_releases_a_finished_runs_lock(tmp_path, shakespeare_path):
    """Issue 20, case 10: after train_and_evaluate returns in this process, its run folder can be resumed by
    another process (no "in use by another run")."""
    from bigram_jax import train_and_evaluate
    from bigram_jax.config import make_config

    out = tmp_path / "run"
    train_and_evaluate(make_config({"max_iters": 20, "eval_interval": 10, "sample_tokens": 0, "out_dir": str(out),
                                    "data": str(shakespeare_path)}))
    ok(run_script("train.py", "--resume", "--out-dir", str(out), "--max-iters", "40", "--sample-tokens", "0"))


# 11. run folders named relative to another working directory ---------------------------------------------------

def test_resume_of_a_relative_out_dir_from_elsewhere_creates_nothing(tmp_path):
    """Issue 20, case 11: a run made as rel/run in tmp/a, resumed as rel/run from tmp/b: one line "no run", exit 2,
    and tmp/b/rel is not created; --resume onto an empty folder: one line, exit 2, the folder left empty."""
    a, b, empty = tmp_path / "a", tmp_path / "b", tmp_path / "empty"
    for d in (a, b, empty):
        d.mkdir()
    ok(run_script("train.py", "--out-dir", "rel/run", "--max-iters", "20", "--sample-tokens", "0", cwd=a))
    one_line(run_script("train.py", "--resume", "--out-dir", "rel/run", "--max-iters", "40", cwd=b), 2, "no run")
    assert not (b / "rel").exists()
    one_line(run_script("train.py", "--resume", "--out-dir", str(empty), "--max-iters", "40"), 2)
    assert list(empty.iterdir()) == []


# 13. importing and running the library changes nothing process-wide --------------------------------------------

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


@pytest.mark.parametrize("program", ["import_all", "train"])
def test_importing_and_running_the_library_changes_nothing_process_wide(tmp_path, shakespeare_path, program):
    """Issue 20, case 13: importing every module of bigram_jax and torch_ref, and then (second case) a whole
    train_and_evaluate with checkpoints, leave the excepthooks, signal handlers, logger levels, warning filters
    and JAX's monitoring listeners as they were."""
    code = IMPORT_ALL if program == "import_all" else TRAIN
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), str(shakespeare_path)], cwd=ROOT,
                       capture_output=True, text=True, env=env_of(), timeout=300)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
