"""What a run trusts, round three (issue 20), part two: checkpoint metadata, the compiled-program key, metrics
that are a function of the config, and the smaller cases. Real processes on real files; every test points
XDG_CACHE_HOME at a folder of its own. The caches are in test_trust.py, signals and locks in test_trust_signals.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_script
from tests.test_faults import one_line
from tests.test_trust import FAST, env_of, ok, said, train

pytestmark = pytest.mark.usefixtures("own_cache")  # (conftest.py)


# 5. checkpoint metadata ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished run with checkpoints at 100, 200 and 300."""
    base = tmp_path_factory.mktemp("trust")
    out = base / "run"
    ok(train(out, "--max-iters", "300", "--checkpoint-every", "100", "--sample-tokens", "0", "--eval-interval", "100",
             cache=base / "cache"))
    return out


def edited(run: Path, to: Path, edit) -> Path:
    """A copy of `run` whose step-300 metadata JSON went through `edit` (which changes it in place)."""
    shutil.copytree(run, to)
    path = to / "checkpoints" / "300" / "meta" / "metadata"
    meta = json.loads(path.read_text())
    before = json.dumps(meta, sort_keys=True)
    edit(meta)
    assert json.dumps(meta, sort_keys=True) != before
    path.write_text(json.dumps(meta))
    return to


def _swap_vocab(meta: dict) -> None:
    v = meta["vocab"]
    meta["vocab"] = v[:20] + v[21] + v[20] + v[22:]


def test_edited_checkpoint_metadata_is_refused_by_sample_and_load(run, tmp_path):
    """Issue 20, case 5a: two characters of the vocabulary swapped in the latest metadata (valid JSON):
    sample.py refuses in one line naming step 300, the metadata and its checksum; load_checkpoint raises."""
    from bigram_jax import load_checkpoint
    from bigram_jax.errors import UserError

    ok(run_script("sample.py", "--checkpoint", str(run), "--num-tokens", "5"))  # the intact run samples
    d = edited(run, tmp_path / "vocab", _swap_vocab)
    one_line(run_script("sample.py", "--checkpoint", str(d), "--num-tokens", "5"), 2, "step 300", "metadata",
             "checksum")
    with pytest.raises(UserError):
        load_checkpoint(d)


@pytest.mark.parametrize("key,value", [("learning_rate", 0.1), ("seed", 7)])
def test_an_edited_config_in_checkpoint_metadata_is_refused_by_resume(run, tmp_path, key, value):
    """Issue 20, case 5b: config.learning_rate (or config.seed) edited in the latest metadata: --resume refuses
    in one line naming the metadata's checksum."""
    d = edited(run, tmp_path / key, lambda m: m["config"].__setitem__(key, value))
    one_line(train(d, "--resume", "--max-iters", "400"), 2, "metadata", "checksum")


def test_an_edited_vocab_size_in_checkpoint_metadata_is_refused_as_such(run, tmp_path):
    """Issue 20, case 5c: vocab_size edited to 64: the same one-line refusal naming the checksum (not a table
    size mismatch)."""
    d = edited(run, tmp_path / "v64", lambda m: m.__setitem__("vocab_size", 64))
    one_line(train(d, "--resume", "--max-iters", "400"), 2, "metadata", "checksum")


def test_metadata_of_this_version_without_its_checksum_is_refused(run, tmp_path):
    """The checksum deleted along with the edit it would show: metadata written by 0.2.0 or later must carry one
    (older versions wrote none, and theirs loads as it is: tests/test_checkpoint.py's fixtures)."""
    def edit(meta: dict) -> None:
        _swap_vocab(meta)
        del meta["meta_sha256"]

    one_line(run_script("sample.py", "--checkpoint", str(edited(run, tmp_path / "gone", edit)), "--num-tokens", "5"),
             2, "step 300", "metadata", "checksum")


# 6. the compiled-program key ----------------------------------------------------------------------------------

def test_the_program_key_sees_the_host_cpu(monkeypatch):
    """Issue 20, case 6 (in-process): host_cpu() names the CPU, is part of the environment every program name
    holds, and another CPU gives the same function and arguments another name."""
    from bigram_jax.compile import program_key
    from bigram_jax.config import Config
    from bigram_jax.train import learning_rate

    args, static = (np.int32(0),), {"cfg": Config()}
    program_key._fixed.cache_clear()
    try:
        cpu = program_key.host_cpu()
        assert isinstance(cpu, str) and cpu and cpu in program_key.environment()
        info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        model = [x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("model name")]
        assert not model or model[0] in cpu, (model, cpu)
        here = program_key.key(learning_rate, args, static)[0]
        monkeypatch.setattr(program_key, "host_cpu", lambda: cpu + " (another)")
        program_key._fixed.cache_clear()
        assert program_key.key(learning_rate, args, static)[0] != here
    finally:
        monkeypatch.undo()
        program_key._fixed.cache_clear()


def test_the_program_key_sees_a_jax_setting_changed_after_the_first_program():
    """JAX's settings are read for every key, not once: a precision set after the first program names others."""
    import jax

    from bigram_jax.compile import program_key
    from bigram_jax.config import Config
    from bigram_jax.train import learning_rate

    args, static = (np.int32(0),), {"cfg": Config()}
    before = program_key.key(learning_rate, args, static)[0]
    jax.config.update("jax_default_matmul_precision", "highest")
    try:
        assert program_key.key(learning_rate, args, static)[0] != before
    finally:
        jax.config.update("jax_default_matmul_precision", None)
    assert program_key.key(learning_rate, args, static)[0] == before


def test_the_program_key_sees_the_backend_settings(tmp_path, own_cache):
    """Issue 20, case 6 (processes): LIBTPU_INIT_ARGS set makes a warmed cache store new programs; the same run
    without it again stores none."""
    programs = own_cache / "bigram_jax" / "programs"
    count = lambda: len(list(programs.glob("*.bin")))  # noqa: E731
    args = ["--max-iters", "50", *FAST]
    ok(train(tmp_path / "warm", *args))
    warm = count()
    ok(run_script("train.py", "--out-dir", str(tmp_path / "tpu"), *args, env={"LIBTPU_INIT_ARGS": "--foo"}))
    flagged = count()
    ok(train(tmp_path / "again", *args))
    assert warm > 0 and flagged > warm and count() == flagged, (warm, flagged, count())


# 12. metrics are a function of the config ---------------------------------------------------------------------

def test_metrics_are_a_function_of_the_config(tmp_path):
    """Issue 20, case 12: three identical runs with short chunks (of a few steps each, so how the steps are chunked
    depends on timing) write the same metrics.jsonl rows, but for tokens_per_second and elapsed_seconds."""
    args = ["--batch-size", "256", "--block-size", "32", "--chunk-seconds", "0.01", "--loss", "gather",
            "--max-iters", "200", "--eval-interval", "50", "--sample-tokens", "0"]
    rows = []
    for k in range(3):
        ok(train(tmp_path / f"r{k}", *args))
        rows.append([{k_: v for k_, v in json.loads(x).items() if k_ not in ("tokens_per_second", "elapsed_seconds")}
                     for x in (tmp_path / f"r{k}" / "metrics.jsonl").read_text().splitlines()])
    assert len(rows[0]) == 5 and rows[0] == rows[1] == rows[2], rows


# 14. smaller cases ----------------------------------------------------------------------------------------------

def test_the_floor_of_certain_and_of_one_character_corpora_reads_well(tmp_path):
    """Issue 20, case 14a: a corpus of certain transitions has no negative zero ("-0.0000") in its floor line; a
    one-character corpus has no exponent ("add-1e+03 smoothing") in it."""
    for name, text, bad in (("ab", "ab" * 2000, r"(?<!\w)-0\.0"), ("a", "a" * 2000, r"e\+0")):
        (tmp_path / f"{name}.txt").write_text(text)
        r = ok(train(tmp_path / name, "--data", str(tmp_path / f"{name}.txt"), "--max-iters", "10", *FAST))
        (floor,) = said(r, "floor:")
        assert not re.search(bad, floor), floor


def test_an_unusable_lock_file_is_one_line(tmp_path):
    """Issue 20, case 14b: OUT_DIR/.lock a folder, or a symlink to nowhere: exit 2 and one line (nothing created
    where the link points)."""
    (tmp_path / "dir" / ".lock").mkdir(parents=True)
    one_line(train(tmp_path / "dir", "--max-iters", "10", *FAST), 2)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / ".lock").symlink_to(tmp_path / "nowhere" / "lock")
    one_line(train(tmp_path / "link", "--max-iters", "10", *FAST), 2)
    assert not (tmp_path / "nowhere").exists()


def test_without_home_the_cache_folder_is_named(tmp_path):
    """Issue 20, case 14c: with HOME and XDG_CACHE_HOME unset a run succeeds and a note on stderr names where it
    caches, mentioning HOME. (It caches in the passwd home of the user running the tests.)"""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--out-dir", str(tmp_path / "o"),
                        "--max-iters", "10", *FAST], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env=env_of(HOME=None, XDG_CACHE_HOME=None))
    ok(r)
    assert any("HOME" in line for line in r.stderr.splitlines()), r.stderr


def test_a_damaged_xla_cache_is_passed_over_quietly(tmp_path, own_cache):
    """Issue 20, case 14d: every file of JAX's compilation cache overwritten with garbage and the program cache
    deleted: the rerun succeeds with no "Warning" on stderr. (The run's own programs bypass JAX's cache; the host
    feed's batch offsets, compiled by plain jit, go through it.)"""
    args = ["--max-iters", "50", "--eval-interval", "50", "--sample-tokens", "20", "--data-on", "host"]
    ok(train(tmp_path / "warm", *args))
    files = [p for p in (own_cache / "bigram_jax" / "xla").rglob("*") if p.is_file()]
    assert files
    for p in files:
        p.write_bytes(os.urandom(max(64, p.stat().st_size // 2)))
    shutil.rmtree(own_cache / "bigram_jax" / "programs")
    r = ok(train(tmp_path / "again", *args))
    assert "Warning" not in r.stderr, r.stderr[-3000:]
