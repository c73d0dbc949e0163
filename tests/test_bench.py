"""Smoke test of scripts/bench.py: every section runs at tiny sizes, writes sane JSON and a page that names the
machine and no absolute path (no timing asserts: the figures of a shared CI machine are noise)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_script

SECTIONS = ("compile", "train", "scale", "generate", "eval", "job", "startup", "limits", "corpus", "tokenize")
# fitted exponents can come out at or below zero at --quick sizes; errors and load can be exactly zero
MAY_BE_ZERO = {"ours_exponent", "lecture_exponent", "exact_vs_float64", "estimate_abs_error_median",
               "estimate_abs_error_max", "loadavg", "sizes"}
# "/a/b" not inside a relative path ("torch_ref/model.py", "./scripts"), a ratio ("a / b") or a URL ("https://")
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/:-])/[\w.+-]+/")


def numbers(node, path: tuple = ()):
    """Every (path, number) in a JSON tree; booleans are not numbers."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numbers(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numbers(v, path + (i,))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def check_json(doc: dict) -> None:
    """The run's JSON: every section, every contender, every figure a finite number (positive unless it may be 0)."""
    assert {"machine", "backend", "device_kind", "versions", "torch_threads", "repeats", "results"} <= set(doc)
    assert "goals" not in doc  # the report states measured figures only
    assert doc["backend"] == "cpu" and doc["quick"] is True
    assert doc["tuned_torch_batch"] == "torch_ref/baselines.py get_batch_fast"
    res = doc["results"]
    assert set(res) == set(SECTIONS)
    for shape in ("32x8", "64x32"):
        assert set(res["train"][shape]) == {"jax_counts", "jax_gather", "torch_lecture", "torch_tuned",
                                            "torch_tuned_1thread"}
    assert set(res["generate"]["1x500"]["seconds"]) == {"jax_cdf", "jax_categorical", "torch_lecture",
                                                        "torch_last_token"}
    assert {"jax", "torch", "wall_ratio"} <= set(res["job"])
    assert {"dram_GBps", "matmul_GFLOPs"} <= set(res["limits"]["rates"])
    assert res["eval"]["estimates_taken"]["torch_lecture"] >= 2
    assert set(res["startup"]["ratio_to_floor"]) == {"job_warm", "job_cold_cache", "help", "bad_flag", "sample_200",
                                                     "torch_job"}
    parts = {"before_job", "data", "counts", "compile", "train", "eval", "checkpoints", "sample", "exit"}
    assert parts <= set(res["startup"]["job_breakdown_s"])
    assert set(res["corpus"]["runs"]) == {"100000", "2000000"} and res["corpus"]["gpt2_vocab"]["peak_rss_mib"] > 0
    tok = res["tokenize"]  # every contender encoded the whole text into the same number of tokens
    assert set(tok["library"]) == {"lines", "items"} and tok["text_mb"] >= 3
    assert tok["library"]["items"]["tokens"] == tok["first"]["tokens"] == tok["second"]["tokens"] > 0
    figures = list(numbers(res))
    assert len(figures) > 100
    for path, v in figures:
        assert math.isfinite(v), path
        assert v > 0 or MAY_BE_ZERO & set(path), path


def check_page(page: str, doc: dict, private: list[Path]) -> None:
    """The page: the machine named, every section's table, no absolute path of this machine."""
    m, v = doc["machine"], doc["versions"]
    for fact in (m["cpu"], f"| cores | {m['cores']} |", "GiB", f"{v['jax']} / {v['jaxlib']}", v["torch"],
                 f"cpu: {doc['device_count']} device(s) of kind `{doc['device_kind']}`",
                 "not yet measured on a GPU or TPU", "--quick"):
        assert fact in page, fact
    for title in ("Training: tokens/s", "How training cost grows", "Generation: seconds", "Evaluation of both",
                  "Whole job", "Compile and import", "measured peak rates", "The counts step", "Start-up:",
                  "Where the lecture's job spends its time", "Corpus size: whole runs", "GPT-2-sized vocabulary"):
        assert title in page, title
    assert "| B x T |" in page and "`scripts/train.py" in page and "tinyshakespeare.txt" in page
    assert "goal" not in page.lower() and "target" not in page.lower()  # measured figures only, no verdicts
    for p in private:
        assert str(p) not in page, p
    assert not ABSOLUTE_PATH.search(page), ABSOLUTE_PATH.search(page)


@pytest.mark.e2e
@pytest.mark.torch  # its rows time torch beside bigram_jax
def test_quick_bench_writes_every_figure_and_the_page(tmp_path: Path, shakespeare_path: Path):
    """The quick bench end to end, its page in a temp folder: the committed docs/benchmarks.md is not touched."""
    out, md = tmp_path / "bench.json", tmp_path / "docs" / "benchmarks.md"
    committed = ROOT / "docs" / "benchmarks.md"
    before = committed.read_bytes() if committed.exists() else None
    # a hang guard only: about 1.5 minutes on a 2-core machine at load 3, longer on a loaded one
    r = run_script("bench.py", "--quick", "--out", str(out), "--markdown", str(md), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    check_json(doc)
    page = md.read_text()
    check_page(page, doc, [ROOT, shakespeare_path.resolve(), tmp_path, Path.home()])
    assert page in r.stdout  # the page is also printed
    assert (committed.read_bytes() if committed.exists() else None) == before  # a smoke run leaves docs/ alone


def test_partial_runs_never_default_to_the_committed_page():
    """Only a full run at full size replaces docs/benchmarks.md unless --markdown says otherwise."""
    from bench.cli import DOCS_PAGE, markdown_path, parser

    assert markdown_path(parser().parse_args([])) == DOCS_PAGE
    for argv in (["--quick"], ["--only", "train"]):
        assert markdown_path(parser().parse_args(argv)) != DOCS_PAGE, argv
    assert markdown_path(parser().parse_args(["--quick", "--markdown", "x.md"])) == Path("x.md")


def test_bad_flag_is_one_line(capsys):
    """A bad flag: one line on stderr, status 2, before any section runs."""
    from bench.cli import main

    assert main(["--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.startswith("bench.py: error: --only"), err


def test_markdown_table_is_the_one_renderer():
    """Header, rule, a line a row, cells through str(); alignment by a letter a column; titled adds a heading."""
    from bench.markdown import markdown_table, titled_table

    assert markdown_table(["a", "b"], [[1, ""], ["x", 2.5]]) == ["| a | b |", "|---|---|", "| 1 |  |", "| x | 2.5 |"]
    assert markdown_table(["a", "b", "c", "d"], [], align="lrc-")[1] == "|:--|--:|:-:|---|"
    assert titled_table("T", ["a"], [["1"]], level=2) == ["", "## T", "", "| a |", "|---|", "| 1 |"]
    for bad in ("l", "lx"):
        with pytest.raises(ValueError):
            markdown_table(["a", "b"], [], align=bad)


@pytest.mark.e2e
def test_the_bench_imports_torch_only_where_a_torch_row_runs():
    """Every bench module imports without torch: torch (and torch_ref) load inside the functions that use them."""
    code = ("import pkgutil, importlib, sys, bench\n"
            "for m in pkgutil.iter_modules(bench.__path__): importlib.import_module('bench.' + m.name)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'torch_ref')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])
