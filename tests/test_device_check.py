"""scripts/device_check.py on the CPU: `--quick` runs every part small and writes both files with every part's
figures and checks; a part killed at its time box or left without time is recorded and the rest go on; the GPU
section it writes from a CPU says nothing was measured on a GPU or TPU. No timing asserts: figures of a shared CI
machine are noise."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from bench.device_parts import PARTS
from tests.conftest import ROOT, run_script
from tests.test_bench import ABSOLUTE_PATH, numbers

# the figures each part must have produced (a dotted path into its figures), real numbers or facts
FIGURES = {"machine": ("backend", "versions.jax", "auto.lecture.model_parallel"),
           "job": ("cold.wall_s", "warm.wall_s", "warm.account_s.compile", "cold.xla_compiles", "kept_programs"),
           "train": ("train.32x8.jax_counts.tokens_per_s", "train.64x32.torch_lecture.us_per_step",
                     "train.64x32, V=512.jax_gather.tokens_per_s"),
           "generate": ("generate.1x500.seconds.jax_cdf", "generate.16x100.seconds.torch_lecture"),
           "eval": ("eval.seconds.jax_exact", "eval.seconds.torch_lecture", "eval.exact.val"),
           "steps_8k": ("step_ms", "plan_gib", "bandwidth_GBps", "copy_GBps"),
           "steps_50k": ("step_ms", "plan_gib", "bandwidth_GBps", "vocab_size"),
           "resume": ("bit_exact.steps", "cpu_fixture.max_abs_diff_vs_cpu", "cpu_fixture.exact_loss_diff"),
           "tests": ("passed",)}


def _at(tree: dict, path: str):
    for key in path.split("."):
        tree = tree[key]
    return tree


# CI's machine may be slow and loaded: the quick check's boxes and budget, times this, are hang guards (on a 2-core
# machine at load 3 each part took under a seventh of its scaled box, the whole check about a ninth of the budget)
TIME_SCALE = 5


@pytest.mark.e2e
@pytest.mark.torch  # the bench's rows against torch are parts of the check
def test_quick_check_writes_every_part(tmp_path: Path, shakespeare_path: Path):
    """Every part ran and passed its checks on the CPU; both files hold its figures; nothing claims a GPU."""
    from bench.device_check import BUDGET_S

    page = ROOT / "docs" / "benchmarks.md"
    before = page.read_bytes()
    r = run_script("device_check.py", "--quick", "--time-scale", str(TIME_SCALE), "--docs", "--out",
                   str(tmp_path / "out"), timeout=BUDGET_S[True] * TIME_SCALE + 120)  # the check's budget ends first
    assert r.returncode == 0, r.stderr[-3000:]
    assert "docs/benchmarks.md left alone" in r.stderr
    doc = json.loads((tmp_path / "out" / "device_check.json").read_text())
    assert doc["quick"] and list(doc["parts"]) == list(PARTS) and doc["failures"] == []
    assert doc["machine"]["backend"] == "cpu" and doc["wall_s"] <= doc["budget_s"] == BUDGET_S[True] * TIME_SCALE
    for name, part in doc["parts"].items():
        assert part["status"] == "ok" and part["error"] is None, (name, part["error"], part["log_tail"])
        assert all(v is not False for v in part["checks"].values()), (name, part["checks"])
        for path in FIGURES[name]:
            assert _at(part["figures"], path) not in (None, "", {}), (name, path)
        for path, v in numbers(part["figures"]):
            assert math.isfinite(v), (name, path)
    parts = doc["parts"]
    assert parts["job"]["figures"]["warm"]["xla_compiles"] == 0 < parts["job"]["figures"]["cold"]["xla_compiles"]
    assert parts["resume"]["checks"]["resumed run is bit-identical to one run"] is True
    assert parts["tests"]["figures"]["failed"] == [] and parts["tests"]["figures"]["platform"] == "cpu"
    report = (tmp_path / "out" / "device_check.md").read_text()
    for fact in ("Smoke run (`--quick`)", "| job | ok |", "Training: tokens/s", "Generation: seconds",
                 "Evaluation of both splits", "One-device steps", "The lecture's job", "Resume", "Tests on cpu",
                 doc["machine"]["machine"]["cpu"]):
        assert fact in report, fact
    section = (tmp_path / "out" / "benchmarks_gpu.md").read_text()
    assert "Not yet measured on a GPU or TPU" in section and "Smoke" not in section
    for text in (report, section):
        assert str(ROOT) not in text and str(shakespeare_path) not in text and str(tmp_path) not in text
        assert not ABSOLUTE_PATH.search(text), ABSOLUTE_PATH.search(text)
    assert page.read_bytes() == before  # a run on the CPU never touches the committed page's GPU section


@pytest.mark.e2e
@pytest.mark.torch  # the part it stops is one of the bench's, which imports torch
def test_a_part_past_its_box_is_killed_and_recorded(tmp_path: Path):
    """A part still running at the end of its box is killed with everything it started, and says so."""
    from bench import device_check, device_parts

    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(tmp_path)}
    part = device_check.run_part("train", True, 2.0, env, tmp_path)  # importing torch and JAX alone takes longer
    assert part["status"] == "failed" and part["error"] == "stopped at its time box (2 s)" and part["figures"] == {}
    assert not device_parts.RUNNING


@pytest.mark.torch
def test_a_spent_budget_is_recorded_and_fails_the_check(tmp_path: Path, monkeypatch, capsys):
    """The machine part takes the budget; the tests part is not started, says why, and the status is 1. The part
    runs in this process (a part's own process and box are the tests above) and takes at least the budget's last
    second: however fast or slow the machine, the first part starts and the second does not."""
    from bench import device_check, device_parts

    def in_process(cmd: list[str], env: dict, timeout: float, group: bool) -> tuple[int, str]:
        status = device_parts.main(cmd[3:])  # cmd: python -m bench.device_parts PART OUT.json BOX --quick
        time.sleep(1)
        return status, ""

    monkeypatch.setattr(device_check, "run_bounded", in_process)
    rc = device_check._check(["--quick", "--only", "machine,tests", "--budget", str(device_check.MIN_BOX_S + 1),
                              "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "device_check.json").read_text())
    assert rc == 1 and doc["parts"]["machine"]["status"] == "ok", (doc["parts"]["machine"], capsys.readouterr().err)
    assert doc["parts"]["tests"]["error"] == "not run: the check's time budget was spent"
    assert doc["failures"] == ["tests: not run: the check's time budget was spent"]
    assert "| tests | failed |" in (tmp_path / "device_check.md").read_text()


@pytest.mark.e2e
def test_bad_input_is_one_line(tmp_path: Path):
    """A bad flag, or no corpus to measure with (a lent machine has no network): one line, status 2."""
    r = run_script("device_check.py", "--out", str(tmp_path), "--only", "nope", timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("device_check.py: error: --only") and r.stderr.count("\n") == 1
    r = run_script("device_check.py", "--out", str(tmp_path), env={"BIGRAM_JAX_DATA": str(tmp_path / "none.txt")},
                   timeout=60)
    assert r.returncode == 2 and "tinyshakespeare not found" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_the_gpu_section_outlives_the_bench_rewriting_its_page():
    """docs/benchmarks.md is rewritten by the bench on a CPU; the section a device check wrote stays as it was, and
    a page that has none says that nothing was measured on a GPU or TPU."""
    from bench.device_page import BEGIN, END, kept_section, splice

    measured = f"{BEGIN}\n## GPU and TPU\n\nMeasured by ... on 1 x NVIDIA H200\n{END}\n"
    old = splice("# Benchmarks\n\nold tables\n", measured)
    new = splice("# Benchmarks\n\nnew tables\n", kept_section(old))
    assert "new tables" in new and "old tables" not in new and new.count("NVIDIA H200") == 1
    assert splice(new, kept_section(new)) == new
    fresh = splice("# Benchmarks\n", kept_section(""))
    assert "Not yet measured on a GPU or TPU" in fresh and fresh.count(BEGIN) == 1
    committed = kept_section((ROOT / "docs" / "benchmarks.md").read_text())  # says nothing was measured, or where
    assert ("Not yet measured on a GPU or TPU" in committed
            or "Measured by `python scripts/device_check.py`" in committed)


def test_a_failed_machine_part_still_gets_its_report():
    """A failed part's figures hold its part_seconds alone: the report names the failure instead of crashing."""
    from bench.device_page import report

    machine = {"status": "failed", "seconds": 3.0, "box_s": 40.0, "error": "ImportError: x", "checks": {},
               "figures": {"part_seconds": 3.0}, "log_tail": ""}
    text = report({"quick": True, "budget_s": 170.0, "wall_s": 3.0, "machine": machine["figures"],
                   "parts": {"machine": machine}})
    assert "the machine part failed: see its error below" in text and "| machine | failed |" in text


def test_bad_out_is_refused_before_any_part_runs(tmp_path: Path, monkeypatch, capsys):
    """Issue 28 item 10: --out naming a file, a link, a folder holding a link or a folder where an output goes, a
    place below a file or in a folder that refuses files: one line, status 2, before any part runs (run_all is
    replaced by one that fails the test). An existing folder of an earlier check is written again."""
    from bench import device_check
    from bigram_jax.cli.guard import guard, prog
    from tests.test_bench import unwritable_folder

    def check(*argv: str) -> int:  # main, but without its stop handlers: they would outlive the test in pytest
        return guard(prog("device_check.py"), lambda: device_check._check(list(argv)))

    def no_parts(*args, **kwargs):
        raise AssertionError("a part ran")

    monkeypatch.setattr(device_check, "run_all", no_parts)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "folder_link").symlink_to(tmp_path, target_is_directory=True)
    for name, make in (("linked", lambda p: p.symlink_to(tmp_path / "a_file")), ("folder", lambda p: p.mkdir())):
        (tmp_path / name).mkdir()
        make(tmp_path / name / "device_check.md")
    cases = {"a file": (tmp_path / "a_file", "exists and is not a folder"),
             "a link": (tmp_path / "folder_link", "is a symbolic link"),
             "an output is a link": (tmp_path / "linked", "device_check.md is a symbolic link"),
             "an output is a folder": (tmp_path / "folder", "device_check.md exists and is not a regular file"),
             "below a file": (tmp_path / "a_file" / "out", "is not a folder"),
             "unwritable": (unwritable_folder(tmp_path) / "out", "cannot write in")}
    for case, (path, words) in cases.items():
        assert check("--quick", "--out", str(path)) == 2, case
        err = capsys.readouterr().err
        assert err.startswith("device_check.py: error: --out ") and words in err and err.count("\n") == 1, (case, err)
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "device_check.json").write_text("{}")
    with pytest.raises(AssertionError, match="a part ran"):
        check("--quick", "--out", str(tmp_path / "earlier"))
