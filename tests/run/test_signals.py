"""Stop signals (bigram_jax/run/signals.py): a checkpoint and one line on a stop; ignored ones stay ignored."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    _assert_same,
    _shakespeare,
    env_of,
    ok,
    one_line,
    popen_script,
    run_script,
    steps,
    train,
    wait_for,
)

LONG = ["--max-iters", "100000000", "--chunk-seconds", "0.05", "--sample-tokens", "0", "--eval-interval", "100"]

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_resume_continues(tmp_path, sig):
    stopped, clean = tmp_path / "stopped", tmp_path / "clean"
    args = ["--eval-interval", "1000", "--chunk-seconds", "0.05", "--sample-tokens", "0"]
    p = popen_script("train.py", "--max-iters", "1000000", "--out-dir", str(stopped), *args)
    for line in p.stdout:
        if line.startswith("step 1000:"):
            break
    p.send_signal(sig)
    t = time.time()
    out, err = p.communicate(timeout=60)
    assert time.time() - t < 5, "the signal must be honoured within a chunk or two"
    assert p.returncode == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "--resume" in err and "Traceback" not in err
    step = int(err.split(" at step ")[1].split(";")[0])
    assert step >= 1000 and step in [int(d.name) for d in (stopped / "checkpoints").iterdir() if d.name.isdigit()]
    target = str((step // 1000 + 1) * 1000)
    r = run_script("train.py", "--resume", "--max-iters", target, "--out-dir", str(stopped))
    assert r.returncode == 0, r.stderr
    assert run_script("train.py", "--max-iters", target, "--out-dir", str(clean), *args).returncode == 0
    _assert_same(stopped, clean)


def _stopped_within(p: subprocess.Popen, sig: int, seconds: float) -> str:
    """Send `sig`; the process must end within `seconds` with 128 + sig and one line; its stderr."""
    p.send_signal(sig)
    t = time.time()
    _, err = p.communicate(timeout=60)
    assert time.time() - t < seconds and p.returncode == 128 + sig, (time.time() - t, p.returncode, err)
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name}" in err
    return err


def test_signals_are_honoured_in_the_closing_sample_and_in_sample_py(tmp_path, run):
    p = popen_script("train.py", "--out-dir", str(tmp_path / "s"), "--max-iters", "100", "--eval-interval", "100",
                     "--sample-tokens", "300000000")
    for line in p.stdout:
        if line.startswith("step 100:"):
            break
    time.sleep(1.0)  # into the sample of 300M characters
    _stopped_within(p, signal.SIGTERM, 2.0)
    assert (tmp_path / "s" / "checkpoints" / "100").is_dir()  # the checkpoint was safe before the sample
    p = popen_script("sample.py", "--checkpoint", str(run), "--num-tokens", "300000000")
    time.sleep(4.0)
    _stopped_within(p, signal.SIGINT, 2.0)


def test_a_stop_during_start_up_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()), "JAX_PLATFORMS": "cpu"}
    for sig in (signal.SIGTERM, signal.SIGINT):
        p = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), "--out-dir", str(tmp_path / "o")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(0.35)  # the handlers are in place after ~0.05 s; JAX is still importing
        _stopped_within(p, sig, 2.0)


def resumes(out: Path) -> None:
    """The run's latest checkpoint continues for 100 more steps."""
    ok(train(out, "--resume", "--max-iters", str(steps(out)[-1] + 100), "--sample-tokens", "0"))


@pytest.mark.usefixtures("own_cache")
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


@pytest.mark.usefixtures("own_cache")
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


@pytest.mark.usefixtures("own_cache")
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
