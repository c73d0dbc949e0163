"""Smoke test of scripts/bench.py: every section runs at tiny sizes and writes sane JSON (no timing asserts)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from tests.conftest import run_script

SECTIONS = ("compile", "train", "scale", "generate", "eval", "job", "limits")
# fitted exponents can come out at or below zero at --quick sizes; errors and load can be exactly zero
MAY_BE_ZERO = {"ours_exponent", "lecture_exponent", "exact_vs_float64", "estimate_abs_error_median",
               "estimate_abs_error_max", "loadavg", "sizes"}


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


def test_quick_bench_writes_every_figure(tmp_path: Path, shakespeare_path: Path):
    out = tmp_path / "bench.json"
    r = run_script("bench.py", "--quick", "--out", str(out), timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert {"machine", "backend", "versions", "torch_threads", "repeats", "results", "goals"} <= set(doc)
    assert doc["backend"] == "cpu" and doc["quick"] is True
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
    figures = list(numbers(res))
    assert len(figures) > 100
    for path, v in figures:
        assert math.isfinite(v), path
        assert v > 0 or MAY_BE_ZERO & set(path), path
    assert {g["goal"].split(":")[0] for g in doc["goals"]} >= {"train 32x8", "whole lecture job", "exact eval"}
    assert "| B x T |" in r.stdout and "**Goals**" in r.stdout
