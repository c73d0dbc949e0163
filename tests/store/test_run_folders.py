"""Run folders and their lock (bigram_jax/store/run_folders.py): never overwritten, one run at a time."""
from __future__ import annotations

import json
import signal
import time

import pytest

from tests.conftest import ROOT, ok, one_line, popen_script, run_cli, run_script

FAST = ["--sample-tokens", "0", "--eval-interval", "10"]


@pytest.mark.e2e
@pytest.mark.torch  # export_torch.py and import_torch.py are among the commands it tries
def test_a_fresh_run_never_writes_into_a_folder_that_holds_a_run(tmp_path):
    """(export_torch.py and import_torch.py in processes of their own: each command's one such test here.)"""
    mine = tmp_path / "x"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": 1}')
    one_line(run_cli("train.py", "--out-dir", str(mine), "--max-iters", "20", *FAST), 2, "already holds a run",
             "--resume")
    assert (mine / "config.json").read_text() == '{"mine": 1}' and sorted(p.name for p in mine.iterdir()) == [
        "config.json"]
    sd = tmp_path / "t.pt"
    r = run_script("export_torch.py", "--checkpoint", str(ROOT / "tests" / "fixtures" / "v010_run"), "--out", str(sd))
    assert r.returncode == 0, r.stderr
    one_line(run_script("import_torch.py", "--state-dict", str(sd), "--data", str(ROOT / "tests" / "fixtures" /
                                                                                 "tiny.txt"), "--out-dir", str(mine)),
             2, "already holds a run")


@pytest.mark.usefixtures("own_cache")
def test_the_main_command_runs_twice_and_the_follow_ups_find_the_newest(tmp_path):
    for _ in range(2):
        r = run_cli("train.py", "--max-iters", "20", *FAST, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    runs = tmp_path / "runs" / "bigram"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    assert json.loads((runs / "version_1" / "summary.json").read_text())["out_dir"].endswith("version_1")
    r = run_cli("sample.py", "--num-tokens", "20", cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout) > 20, r.stderr
    r = run_cli("train.py", "--resume", "--max-iters", "40", *FAST, cwd=tmp_path)
    assert r.returncode == 0 and "step 40:" in r.stdout and "version_1" in r.stdout, r.stderr
    assert (runs / "version_1" / "checkpoints" / "40").is_dir() and not (runs / "version_0" / "checkpoints" /
                                                                            "40").exists()


@pytest.mark.e2e
def test_two_runs_in_one_folder_at_once_are_refused_and_a_killed_run_leaves_no_lock(tmp_path):
    """The run that holds the folder is a process of its own (killed below); the others run in this one."""
    out = tmp_path / "run"
    p = popen_script("train.py", "--out-dir", str(out), "--max-iters", "100000000", "--checkpoint-every", "500",
                     "--chunk-seconds", "0.05", *FAST)
    try:
        deadline = time.time() + 120
        # a finished checkpoint: named by its step alone (orbax writes under a temporary name first)
        while time.time() < deadline and not [c for c in (out / "checkpoints").glob("[0-9]*") if c.name.isdigit()]:
            time.sleep(0.1)
        one_line(run_cli("train.py", "--resume", "--out-dir", str(out), "--max-iters", "10"), 2,
                 "in use by another run")
        one_line(run_cli("sample.py", "--checkpoint", str(out), "--num-tokens", "5", "--step", "0"), 2, "step 0")
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    last = max(int(d.name) for d in (out / "checkpoints").iterdir() if d.name.isdigit())
    r = run_cli("train.py", "--resume", "--out-dir", str(out), "--max-iters", str(last + 20))
    assert r.returncode == 0, r.stderr


@pytest.mark.e2e
def test_file_system_errors_are_one_line(tmp_path, run):
    """(plot.py in a process of its own: the command's one such test here.)"""
    (tmp_path / "afile").write_text("x")
    one_line(run_cli("train.py", "--out-dir", str(tmp_path / "afile"), *FAST), 2, "is a file")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "checkpoints").write_text("x")
    one_line(run_cli("train.py", "--out-dir", str(tmp_path / "o"), *FAST), 2, "already holds a run")
    one_line(run_script("plot.py", "--run", str(run), "--out", str(tmp_path / "afile")), 2, "is a file")


@pytest.mark.usefixtures("own_cache")
def test_an_unusable_lock_file_is_one_line(tmp_path):
    """Issue 20, case 14b: OUT_DIR/.lock a folder, or a symlink to nowhere: exit 2 and one line (nothing created
    where the link points)."""
    (tmp_path / "dir" / ".lock").mkdir(parents=True)
    one_line(run_cli("train.py", "--out-dir", str(tmp_path / "dir"), "--max-iters", "10", *FAST), 2)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / ".lock").symlink_to(tmp_path / "nowhere" / "lock")
    one_line(run_cli("train.py", "--out-dir", str(tmp_path / "link"), "--max-iters", "10", *FAST), 2)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
def test_the_python_api_releases_a_finished_runs_lock(tmp_path, shakespeare_path):
    """Issue 20, case 10: after train_and_evaluate returns in this process, its run folder can be resumed by
    another process (no "in use by another run"): that one a process of its own."""
    from bigram_jax import train_and_evaluate
    from bigram_jax.config import make_config

    out = tmp_path / "run"
    train_and_evaluate(make_config({"max_iters": 20, "eval_interval": 10, "sample_tokens": 0, "out_dir": str(out),
                                    "data": str(shakespeare_path)}))
    ok(run_script("train.py", "--resume", "--out-dir", str(out), "--max-iters", "40", "--sample-tokens", "0"))


@pytest.mark.usefixtures("own_cache")
def test_resume_of_a_relative_out_dir_from_elsewhere_creates_nothing(tmp_path):
    """Issue 20, case 11: a run made as rel/run in tmp/a, resumed as rel/run from tmp/b: one line "no run", exit 2,
    and tmp/b/rel is not created; --resume onto an empty folder: one line, exit 2, the folder left empty."""
    a, b, empty = tmp_path / "a", tmp_path / "b", tmp_path / "empty"
    for d in (a, b, empty):
        d.mkdir()
    ok(run_cli("train.py", "--out-dir", "rel/run", "--max-iters", "20", "--sample-tokens", "0", cwd=a))
    one_line(run_cli("train.py", "--resume", "--out-dir", "rel/run", "--max-iters", "40", cwd=b), 2, "no run")
    assert not (b / "rel").exists()
    one_line(run_cli("train.py", "--resume", "--out-dir", str(empty), "--max-iters", "40"), 2)
    assert list(empty.iterdir()) == []


def test_a_fresh_run_into_a_run_is_refused_before_the_text_is_encoded(tmp_path, own_cache, hf_json, shakespeare_path):
    """The folder is checked before the corpus is read: a large text's encoding (minutes) is never spent on a run
    that is then refused, and nothing of it is cached."""
    mine = tmp_path / "x"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": 1}')
    r = run_cli("train.py", "--data", str(shakespeare_path), "--tokenizer", str(hf_json), "--out-dir", str(mine), *FAST)
    one_line(r, 2, "already holds a run")
    assert r.stdout == "" and not list(own_cache.rglob("*.bin"))
