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
    run_cli,
    steps,
    wait_for,
)

LONG = ["--max-iters", "100000000", "--chunk-seconds", "0.05", "--sample-tokens", "0", "--eval-interval", "100"]

# Every test here is about a process and the signals sent to it; what follows a stop (a resume, the same run
# uninterrupted) runs in this process. Waits are for a state the process reaches, with hang guards (HANG seconds)
# many times what a quiet machine needs: no test measures how fast a stop is honoured.
HANG = 120

pytestmark = pytest.mark.e2e


def _stopped_at(p, line: str, sig: int) -> str:
    """Send `sig` to the run `p` once it printed `line`; its stderr when it has ended (killed if it hangs)."""
    try:
        wait_for(p, line, HANG)
        p.send_signal(sig)
        return p.communicate(timeout=HANG)[1]
    finally:
        p.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_resume_continues(tmp_path, sig):
    """A run of a million steps stops on the signal (a run that went on would outlast the hang guard many times)."""
    stopped, clean = tmp_path / "stopped", tmp_path / "clean"
    args = ["--eval-interval", "1000", "--chunk-seconds", "0.05", "--sample-tokens", "0"]
    p = popen_script("train.py", "--max-iters", "1000000", "--out-dir", str(stopped), *args)
    err = _stopped_at(p, "step 1000:", sig)
    assert p.returncode == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "--resume" in err and "Traceback" not in err
    step = int(err.split(" at step ")[1].split(";")[0])
    assert step >= 1000 and step in steps(stopped)
    target = str((step // 1000 + 1) * 1000)
    ok(run_cli("train.py", "--resume", "--max-iters", target, "--out-dir", str(stopped)))
    ok(run_cli("train.py", "--max-iters", target, "--out-dir", str(clean), *args))
    _assert_same(stopped, clean)


def _stopped(p: subprocess.Popen, sig: int) -> str:
    """Send `sig`; the process must end with 128 + sig and one line (within the hang guard); its stderr."""
    try:
        p.send_signal(sig)
        _, err = p.communicate(timeout=HANG)
    finally:
        p.kill()
    assert p.returncode == 128 + sig, (p.returncode, err)
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name}" in err
    return err


SAYS_SAMPLING = """
import os, runpy, sys
import bigram_jax.sampling as sampling
generate = sampling.generate
def says(*args, **kwargs):
    os.write(2, b"sampling\\n")
    return generate(*args, **kwargs)
sampling.generate = says
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def sampling(script: str, *argv: str) -> subprocess.Popen:
    """scripts/<script> `argv` in a process that says "sampling" on stderr as it begins to sample (the state a
    test waits for before it sends a stop); the rest as popen_script."""
    return subprocess.Popen([sys.executable, "-c", SAYS_SAMPLING, str(ROOT / "scripts" / script), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_of())


def _wait_until_sampling(p: subprocess.Popen) -> None:
    """Read p's stderr until it says it samples (p is killed if it does not, within the hang guard)."""
    deadline = time.monotonic() + HANG
    for line in p.stderr:
        if line == "sampling\n":
            return
        if time.monotonic() > deadline:
            break
    p.kill()
    pytest.fail(f"the process did not begin to sample: {p.wait()} {p.stdout.read()[-2000:]}")


def test_signals_are_honoured_in_the_closing_sample_and_in_sample_py(tmp_path, run):
    """Samples of 300M characters (minutes, many times the hang guard) stop on a signal sent once they begin."""
    p = sampling("train.py", "--out-dir", str(tmp_path / "s"), "--max-iters", "100", "--eval-interval", "100",
                 "--sample-tokens", "300000000")
    _wait_until_sampling(p)
    _stopped(p, signal.SIGTERM)
    assert (tmp_path / "s" / "checkpoints" / "100").is_dir()  # the checkpoint was safe before the sample
    p = sampling("sample.py", "--checkpoint", str(run), "--num-tokens", "300000000")
    _wait_until_sampling(p)
    _stopped(p, signal.SIGINT)


def _importing_jax(pid: int) -> bool:
    """Whether process `pid` has its stop handlers in place (SIGUSR2's, the last one set: the SigCgt mask of
    /proc/PID/status) and has begun to import JAX (jaxlib's first library mapped: /proc/PID/maps). Linux."""
    try:
        status, maps = (Path(f"/proc/{pid}/{name}").read_text() for name in ("status", "maps"))
    except OSError:  # it has ended
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signal.SIGUSR2 - 1) & 1) and f"{os.sep}jaxlib{os.sep}" in maps


def test_a_stop_during_start_up_is_one_line(tmp_path):
    """A signal while JAX is importing (its import takes a second or more after its first library is mapped):
    one line, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()), "JAX_PLATFORMS": "cpu"}
    for sig in (signal.SIGTERM, signal.SIGINT):
        p = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), "--out-dir", str(tmp_path / "o")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + HANG
        while not _importing_jax(p.pid):
            assert time.monotonic() < deadline and p.poll() is None, (p.poll(), "JAX was not imported")
            time.sleep(0.002)
        _stopped(p, sig)


def resumes(out: Path) -> None:
    """The run's latest checkpoint continues for 100 more steps (in this process)."""
    ok(run_cli("train.py", "--out-dir", str(out), "--resume", "--max-iters", str(steps(out)[-1] + 100),
               "--sample-tokens", "0"))


@pytest.mark.usefixtures("own_cache")
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2], ids=lambda s: s.name)
def test_hangup_and_user_signals_save_and_stop_as_sigterm_does(tmp_path, sig):
    """Issue 20, case 7: SIGHUP, SIGUSR1 and SIGUSR2 stop a run as SIGTERM does: a checkpoint is saved, one line
    says so, the exit status is 128 + the signal, and --resume continues."""
    out = tmp_path / "run"
    p = subprocess.Popen(train_after(at_default(sig), "--out-dir", str(out), *LONG), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env_of())
    err = _stopped_at(p, "step 100:", sig)
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
    seen, deadline = b"", time.monotonic() + HANG
    try:
        while b"step 100:" not in seen and time.monotonic() < deadline and p.poll() is None:
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
    """Issue 20, case 7: a run started with SIGHUP ignored (as under nohup) is not stopped by SIGHUP: it logs two
    more evals after it (a stop comes at the next chunk's end, and chunks end at evals), and a later SIGTERM is
    the signal that stops it."""
    nohup = "import signal\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)"
    out = tmp_path / "run"
    p = subprocess.Popen(train_after(nohup, "--out-dir", str(out), *LONG), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env_of())

    def rows() -> int:
        return (out / "metrics.jsonl").read_text().count("\n")

    try:
        wait_for(p, "step 100:", HANG)
        before = rows()
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + HANG
        while rows() < before + 2 and p.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        assert p.poll() is None, p.stderr.read()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=HANG)
        assert p.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in err, err
    finally:
        p.kill()
