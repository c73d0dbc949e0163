"""The run's pace (bigram_jax/run/pacing.py): metrics are a function of the config, however chunked."""
from __future__ import annotations

import json

import pytest

from tests.conftest import ok, run_cli

pytestmark = pytest.mark.usefixtures("own_cache")


def test_metrics_are_a_function_of_the_config(tmp_path):
    """Issue 20, case 12: three identical runs with short chunks (of a few steps each, so how the steps are chunked
    depends on timing) write the same metrics.jsonl rows, but for tokens_per_second and elapsed_seconds."""
    args = ["--batch-size", "256", "--block-size", "32", "--chunk-seconds", "0.01", "--loss", "gather",
            "--max-iters", "200", "--eval-interval", "50", "--sample-tokens", "0"]
    rows = []
    for k in range(3):
        ok(run_cli("train.py", "--out-dir", str(tmp_path / f"r{k}"), *args))
        rows.append([{k_: v for k_, v in json.loads(x).items() if k_ not in ("tokens_per_second", "elapsed_seconds")}
                     for x in (tmp_path / f"r{k}" / "metrics.jsonl").read_text().splitlines()])
    assert len(rows[0]) == 5 and rows[0] == rows[1] == rows[2], rows
