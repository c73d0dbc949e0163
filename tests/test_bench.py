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

SECTIONS = ("compile", "train", "scale", "generate", "eval", "job", "startup", "limits", "corpus", "tokenize", "memory",
            "unbroken", "gpt2_bpe")
# fitted exponents can come out at or below zero at --quick sizes; errors and load can be exactly zero
MAY_BE_ZERO = {"ours_exponent", "lecture_exponent", "exact_vs_float64", "estimate_abs_error_median",
               "estimate_abs_error_max", "loadavg", "sizes", "line_breaks"}
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
    mem = res["memory"]  # XLA's figures, which the plan's must equal (tests/devices/test_memory.py)
    assert mem["vocab_size"] == 8192 and round(mem["state_bytes_per_param"]) == mem["plan"]["state_bytes_per_param"]
    assert "error" not in res["unbroken"] and res["unbroken"]["tokens"] > 0 and res["unbroken"]["line_breaks"] == 0
    gpt2 = res["gpt2_bpe"]  # run, or skipped with its reason (no cached BPE file, or no --compact-vocab yet)
    assert set(gpt2) == {"skipped"} or gpt2["ids_used"] < gpt2["ids_of"] == 50_257, gpt2
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
                  "Where the lecture's job spends its time", "Corpus size: whole runs", "GPT-2-sized vocabulary",
                  "The train step's memory", "A text without line breaks", "nanoGPT's shakespeare with GPT-2 BPE"):
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
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a read-only one (a root process writes there anyway: then
    sysfs, whose top folder refuses new files), else the test is skipped."""
    ro = tmp_path / "read_only"
    ro.mkdir()
    ro.chmod(0o555)
    for folder in (ro, Path("/sys")):
        try:
            (folder / "probe").touch()
            (folder / "probe").unlink()
        except OSError:
            return folder
    pytest.skip("no folder here refuses this process's files")


def bad_outputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Output paths that must be refused before any work, each with the words of its one-line refusal."""
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "a_file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    return {"folder": (tmp_path / "a_folder", "is not a regular file"),
            "link": (tmp_path / "link", "is a symbolic link"), "dangling link": (tmp_path / "dangling", "symbolic link"),
            "under a file": (tmp_path / "a_file" / "x.json", "is not a folder"),
            "unwritable": (unwritable_folder(tmp_path) / "sub" / "x.json", "cannot write in")}


def test_bad_outputs_are_refused_before_any_section_runs(tmp_path: Path, monkeypatch, capsys):
    """Issue 28 item 10: --out or --markdown on a folder, a link (even a dangling one), below a file or in a folder
    that refuses files: one line, status 2, and no section started (the run is replaced by one that fails the
    test). An existing regular file is the JSON of an earlier run: it is replaced, so that run starts."""
    from bench import cli

    def no_run(args):
        raise AssertionError("a section ran")

    monkeypatch.setattr(cli, "run", no_run)
    for case, (path, words) in bad_outputs(tmp_path).items():
        for flag in ("--out", "--markdown"):
            assert cli.main(["--quick", flag, str(path)]) == 2, (case, flag)
            err = capsys.readouterr().err
            assert err.startswith(f"bench.py: error: {flag} ") and words in err and err.count("\n") == 1, (case, err)
    with pytest.raises(AssertionError, match="a section ran"):
        cli.main(["--quick", "--out", str(tmp_path / "a_file"), "--markdown", str(tmp_path / "new" / "page.md")])
    assert (tmp_path / "a_file").read_text() == "x" and not (tmp_path / "new").exists()


def test_outputs_are_written_without_following_a_link(tmp_path: Path):
    """A link put where an output goes after the check is refused when written, not followed."""
    from bench.outputs import write_text
    from bigram_jax.errors import UserError

    (tmp_path / "target").write_text("kept")
    (tmp_path / "out.json").symlink_to(tmp_path / "target")
    with pytest.raises(UserError, match="cannot write"):
        write_text(tmp_path / "out.json", "{}")
    assert (tmp_path / "target").read_text() == "kept"
    write_text(tmp_path / "new" / "out.json", "{}")  # missing folders are created
    assert (tmp_path / "new" / "out.json").read_text() == "{}"


def _doc(results: dict, quick: bool = False) -> dict:
    """A bench run's JSON as page.py reads it, with `results`."""
    return {"machine": {"cpu": "AMD EPYC", "cores": 2, "memory_gib": 23.5, "platform": "Linux", "python": "3.11.7"},
            "versions": {"jax": "0.10.2", "jaxlib": "0.10.2", "flax": "0.12.8", "optax": "0.2.8",
                         "orbax-checkpoint": "0.12.8", "numpy": "2.4.6", "torch": "2.13.0"},
            "torch_threads": {"intra_op": 2}, "backend": "cpu", "device_count": 1, "device_kind": "cpu",
            "repeats": 5, "loadavg": {"start": [1.0], "end": [1.0]}, "lecture_code": "torch_ref.model",
            "tuned_torch_batch": "torch_ref/baselines.py get_batch_fast", "quick": quick, "results": results}


SKIPPED = {"gpt2_bpe": {"skipped": "no BPE file"}}


def test_sections_measured_on_their_own_keep_their_place_on_the_page(tmp_path: Path):
    """`--only gpt2_bpe --docs` puts that section's block, naming the machine and versions, into the page in place
    (before the GPU section when the page has none), leaving the rest as it was; a later full run that did not
    measure it keeps the block; one that measured it replaces it."""
    from bench import page
    from bench.device_page import BEGIN

    path = tmp_path / "benchmarks.md"
    path.write_text(page.render(_doc({}), "bench.json") + page.kept_section(""))
    before = path.read_text()
    assert page.write_kept(_doc(SKIPPED), path, []) == ["gpt2_bpe"]
    text = path.read_text()
    block = page.kept_block(text, "gpt2_bpe")
    assert "Skipped: no BPE file." in block and "jax 0.10.2 / jaxlib 0.10.2" in block and "AMD EPYC" in block
    assert "not yet measured on a GPU or TPU" in block and text.index(block) < text.index(BEGIN)
    assert text.replace(block + "\n\n", "") == before  # nothing else changed
    page.write(_doc({}), path, tmp_path / "bench.json", [])  # a run without the section keeps its block
    assert page.kept_block(path.read_text(), "gpt2_bpe") == block and path.read_text().count(BEGIN) == 1
    page.write(_doc({"gpt2_bpe": {"skipped": "other"}}), path, tmp_path / "bench.json", [])
    assert "Skipped: other." in page.kept_block(path.read_text(), "gpt2_bpe") and "no BPE file" not in path.read_text()


def test_docs_is_refused_with_quick(capsys):
    """--docs writes measured figures into the committed page: not a smoke run's. Its help names the kept sections."""
    from bench.cli import main, parser
    from bench.page import KEPT

    assert f"({', '.join(KEPT)})" in " ".join(parser().format_help().split())

    assert main(["--quick", "--only", "memory", "--docs"]) == 2
    assert "--docs" in capsys.readouterr().err


def test_the_gpt2_section_is_skipped_without_the_bpe_file(tmp_path: Path, monkeypatch, shakespeare_path: Path):
    """No BPE file in tiktoken's cache (an empty TIKTOKEN_CACHE_DIR): the section says so and is skipped; the
    unreachable proxy it runs under means nothing was fetched instead."""
    from types import SimpleNamespace

    from bench import gpt2_bpe
    from bench.context import QUICK

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    out = gpt2_bpe.sec_gpt2_bpe(SimpleNamespace(sizes=QUICK, corpus=SimpleNamespace(path=shakespeare_path)))
    assert set(out) == {"skipped"} and "not in its cache" in out["skipped"] and list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_the_gpt2_section_trains_the_compact_table(tmp_path: Path, shakespeare_path: Path):
    """tinyshakespeare in GPT-2's BPE (from tiktoken's cache, or skipped), trained with --compact-vocab at B = 64,
    T = 256 for a few steps: the ids the corpus uses, of 50,257; the floors; a peak RSS measured."""
    from types import SimpleNamespace

    from bench import gpt2_bpe
    from bench.context import QUICK

    if not gpt2_bpe.has_compact_vocab():
        pytest.skip("scripts/train.py has no --compact-vocab yet")
    if gpt2_bpe.cached_encoding(gpt2_bpe.offline_env(str(tmp_path))) is None:
        pytest.skip("tiktoken's GPT-2 BPE file is not cached here (no downloads in tests)")
    out = gpt2_bpe.sec_gpt2_bpe(SimpleNamespace(sizes=QUICK, corpus=SimpleNamespace(path=shakespeare_path)))
    assert 10_000 < out["ids_used"] < out["ids_of"] == 50_257 and out["vocab_size"] == out["ids_used"], out
    assert 0 < out["floor_train_loss"] < out["floor_val_loss"] and out["peak_rss_mib"] > 0 and out["steps"] == 3


def test_the_unbroken_text_has_no_line_break(tmp_path: Path, shakespeare_path: Path):
    """The text the unbroken-text section encodes: at least the size asked, one line."""
    from bench.unbroken import unbroken_text

    text = shakespeare_path.read_text(encoding="utf-8")
    size = unbroken_text(text, tmp_path / "t.txt", 2.5)
    raw = (tmp_path / "t.txt").read_bytes()
    assert len(raw) == size >= 2.5e6 and b"\n" not in raw and b"\r" not in raw
    assert raw.startswith(text[:1000].replace("\n", " ").encode())
