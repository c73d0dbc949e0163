"""Token-id corpora end to end: train on a .bin, sample ids from its checkpoint, refuse another vocabulary."""
from __future__ import annotations

import json

from tests.conftest import run_script


def test_token_id_run_samples_ids_and_refuses_other_vocab_sizes(tmp_path):
    data = tmp_path / "tokens.bin"
    r = run_script("synth_tokens.py", "--vocab-size", "300", "--tokens", "50000", "--out", str(data))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "run"
    r = run_script("train.py", "--data", str(data), "--out-dir", str(out), "--max-iters", "100",
                   "--eval-interval", "50", "--sample-tokens", "10", "--plot")
    assert r.returncode == 0, r.stderr
    # no characters to label and V x V too big to draw: only the loss curves
    assert (out / "loss.png").is_file() and not (out / "transitions.png").exists() and "no transitions.png" in r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["vocab_size"] == 300 and s["loss"] == "gather" and len(s["sample"].split()) == 11
    a = run_script("sample.py", "--checkpoint", str(out), "--prompt", "7 8", "--num-tokens", "20")
    assert a.returncode == 0, a.stderr
    ids = [int(t) for t in a.stdout.split()]
    assert ids[:2] == [7, 8] and len(ids) == 22 and all(0 <= i < 300 for i in ids)
    for prompt, msg in (("ROMEO", "whitespace-separated integers"), ("300", "token ids must be in [0, 300)")):
        b = run_script("sample.py", "--checkpoint", str(out), "--prompt", prompt)
        assert b.returncode == 2 and msg in b.stderr and len(b.stderr.strip().splitlines()) == 1, b.stderr
    c = run_script("train.py", "--data", str(data), "--out-dir", str(out), "--resume", "--vocab-size", "320")
    assert c.returncode == 2 and "checkpoint table is 300x300 but this data has a vocabulary of 320" in c.stderr
