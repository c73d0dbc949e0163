"""scripts/sample.py (bigram_jax/cli/sample.py): samples from a checkpoint, bad input as one line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, one_line, run_cli, script


def test_sample_from_checkpoint(trained, tmp_path):
    a = run_cli("sample.py", "--checkpoint", str(trained), "--prompt", "ROMEO:", "--num-tokens", "200",
                "--num-samples", "2", "--seed", "5")
    b = run_cli("sample.py", "--checkpoint", str(trained / "checkpoints"), "--prompt", "ROMEO:",
                "--num-tokens", "200", "--num-samples", "2", "--seed", "5")
    c = run_cli("sample.py", "--checkpoint", str(trained), "--prompt", "ROMEO:", "--num-tokens", "200",
                "--num-samples", "2", "--seed", "6")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout != c.stdout
    assert a.stdout.count("ROMEO:") >= 2 and "step 600" in a.stderr and "step" not in a.stdout  # notes on stderr
    (tmp_path / "p.txt").write_text("JULIET:")
    d = run_cli("sample.py", "--checkpoint", str(trained), "--step", "300", "--prompt-file", str(tmp_path / "p.txt"),
                "--num-tokens", "50", "--top-k", "3", "--temperature", "0.8", "--sampler", "cdf")
    assert d.returncode == 0 and d.stdout.startswith("JULIET:") and len(d.stdout.rstrip("\n")) >= 57


@pytest.mark.parametrize("argv,msg", [
    (["--prompt", "héllo€"], "2 character(s) not in the vocabulary: 'é', '€'"),
    (["--prompt", ""], "prompt is empty"),
    (["--prompt", "ab\udcffc"], "--prompt is not UTF-8 text (an undecodable byte at character 3)"),  # argv's bytes
    (["--step", "12345"], "no checkpoint at step 12345"),
    (["--top-k", "0"], "top_k must be an integer in 1..65"),
    (["--temperature", "0"], "temperature must be a positive"),
    (["--num-tokens", "-5"], "--num-tokens must be >= 0"),
    (["--prompt-file", "/nonexistent/p.txt"], "prompt file not found: /nonexistent/p.txt"),
])
def test_sample_bad_input(trained, argv, msg):
    r = run_cli("sample.py", "--checkpoint", str(trained), *argv)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_prompt_file_fifo_or_oversized_file_is_one_line(trained, tmp_path):
    """--prompt-file reads through the checked open: a FIFO is refused at once, and a file over PROMPT_FILE_MAX
    before a byte is read (it used to be read whole, however large)."""
    from bigram_jax.cli.sample import PROMPT_FILE_MAX
    from tests.store.test_files import _unblocked

    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    with _unblocked(fifo):
        one_line(run_cli("sample.py", "--checkpoint", str(trained), "--prompt-file", str(fifo)), 2,
                 f"prompt file {fifo} is not a regular file")
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(PROMPT_FILE_MAX + 1)  # sparse: no disk, and no read if refused by its size
    one_line(run_cli("sample.py", "--checkpoint", str(trained), "--prompt-file", str(big)), 2,
             f"prompt file {big} is", "over the 64 MB such a file can be")


@pytest.mark.usefixtures("own_cache")
def test_sample_speaks_the_meta_pkl_text(pair):
    r = run_cli("sample.py", "--checkpoint", str(pair["bin"][0]), "--prompt", "ROMEO:", "--num-tokens", "100")
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:") and len(r.stdout) == 6 + 100 + 1, (r.stdout, r.stderr)
    same = run_cli("sample.py", "--checkpoint", str(pair["text"][0]), "--prompt", "ROMEO:", "--num-tokens", "100")
    assert same.stdout == r.stdout  # same table, same seed, same characters


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
def test_sample_puts_only_the_samples_on_stdout(pair):
    """A process's stdout holds the samples alone (`sample.py | ...` reads text); what is said about them goes to
    stderr."""
    r = script("sample.py", "--checkpoint", str(pair["text"][0]), "--prompt", "ROMEO:", "--num-tokens", "50",
               "--num-samples", "2")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 2 * (6 + 50 + 1) and r.stdout.startswith("ROMEO:"), r.stdout
    assert r.stdout[6 + 50:].startswith("\nROMEO:") and r.stdout.endswith("\n")
    assert "sample" not in r.stdout and "sample 1" in r.stderr and "sample 2" in r.stderr


@pytest.mark.e2e
def test_a_closed_stdout_ends_quietly(run):
    """sample.py | head: the reader goes away mid-sample; the command stops with 128 + SIGPIPE and says nothing
    (before: 'error: Broken pipe', exit 1)."""
    import signal

    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    p = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "sample.py"), "--checkpoint", str(run),
                          "--num-tokens", "200000"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    assert p.stdout.read(10)  # the first characters, then the reader closes its end
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 128 + signal.SIGPIPE and err == ""


def test_a_long_prompt_times_many_samples_is_refused_in_one_line(run, tmp_path):
    """The memory check counts the prompt's copies (num_samples x prompt length), not only the new tokens."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("a" * 3_000_000)
    r = run_cli("sample.py", "--checkpoint", str(run), "--prompt-file", str(prompt), "--num-samples", "20000",
                "--num-tokens", "1")
    one_line(r, 2, "prompt copies", "GiB")
