"""export_torch.py and import_torch.py (torch_ref/cli.py): tables and tokenizers out and in."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export and import need PyTorch (pip install -e '.[torch]')")

from bigram_jax import load_checkpoint  # noqa: E402
from bigram_jax.model import table_of  # noqa: E402
from tests.conftest import ROOT, one_line, run_cli, run_script  # noqa: E402
from torch_ref import parity  # noqa: E402


@pytest.mark.e2e
def test_export_and_import_commands(tmp_path, shakespeare_path, run):
    """A trained checkpoint -> .pt -> torch gives the checkpoint's exact val loss; .pt -> checkpoint keeps logits.
    Both commands run as processes here; the other tests run them in-process."""
    from torch_ref.model import BigramLanguageModel as TorchBigram

    pt = tmp_path / "table.pt"
    r = run_script("export_torch.py", "--checkpoint", str(run), "--out", str(pt))
    assert r.returncode == 0, r.stderr
    ck = load_checkpoint(run)
    assert ck.step == 300
    model = TorchBigram(len(ck.vocab))
    model.load_state_dict(torch.load(pt, weights_only=True))
    text = shakespeare_path.read_text(encoding="utf-8")
    ids = torch.tensor([ck.vocab.index(c) for c in text[int(0.9 * len(text)):]])
    with torch.no_grad():
        _, loss = model(ids[None, :-1], ids[None, 1:])  # the lecture's forward over the whole val split
    assert abs(loss.item() - ck.meta["val_loss"]) <= 1e-5 * ck.meta["val_loss"]
    r = run_script("import_torch.py", "--state-dict", str(pt), "--out-dir", str(tmp_path / "imported"))
    assert r.returncode == 0 and "val loss" in r.stdout, r.stderr
    back = load_checkpoint(tmp_path / "imported")
    np.testing.assert_array_equal(table_of(back.params), table_of(ck.params))
    assert back.vocab == ck.vocab and back.step == 0
    bad = run_cli("export_torch.py", "--checkpoint", str(run), "--out", str(pt))  # never overwrites
    assert bad.returncode == 2 and "exists" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.usefixtures("own_cache")
def test_export_writes_the_table_and_its_tokenizer(pair, tmp_path, shakespeare_text):
    """A meta.pkl run: beside the .pt, nanoGPT's own meta.pkl (what prepare.py writes) and the project's record."""
    out = tmp_path / "X.pt"
    r = run_cli("export_torch.py", "--checkpoint", str(pair["bin"][0]), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("X.")) == [
        "X.bigram_jax.json", "X.meta.pkl", "X.pt"]
    info = json.loads((tmp_path / "X.bigram_jax.json").read_text())
    assert info["vocab_size"] == 65 and info["tokenizer"]["kind"] == "meta.pkl"
    assert info["tokenizer"]["vocab"] == "".join(sorted(set(shakespeare_text)))  # the meta's characters, in id order
    assert info["tokenizer"]["source"] == str(pair["folder"] / "meta.pkl")
    with open(tmp_path / "X.meta.pkl", "rb") as f:  # as nanoGPT's sample.py reads it
        assert pickle.load(f) == pickle.loads((pair["folder"] / "meta.pkl").read_bytes())
    table = torch.load(out)["token_embedding_table.weight"]
    assert tuple(table.shape) == (65, 65)
    r = run_cli("export_torch.py", "--checkpoint", str(pair["bin"][0]), "--out", str(out))
    one_line(r, 2, "exists")


@pytest.mark.usefixtures("own_cache")
def test_export_writes_both_files_without_the_tokenizer_library(bpe, tmp_path, monkeypatch):
    """export_torch.py writes the tokenizer from the checkpoint's record as it is: with tiktoken and tokenizers
    absent (or tiktoken's file not downloadable) the files are written: the tokenizer.json itself, or the tiktoken
    encoding's name, and the record."""
    out = tmp_path / "X.pt"
    with monkeypatch.context() as m:  # for the call, `import tiktoken` and `import tokenizers` raise ImportError
        m.setitem(sys.modules, "tiktoken", None)
        m.setitem(sys.modules, "tokenizers", None)
        r = run_cli("export_torch.py", "--checkpoint", str(bpe.run), "--out", str(out))
    assert r.returncode == 0, r.stderr
    record = load_checkpoint(bpe.run).meta["tokenizer"]
    info = json.loads((tmp_path / "X.bigram_jax.json").read_text())
    assert info["tokenizer"] == record and out.is_file()
    if bpe.kind == "json":
        assert (tmp_path / "X.tokenizer.json").read_text(encoding="utf-8") == record["json"]
    else:
        assert (tmp_path / "X.tiktoken.txt").read_text() == f"{record['name']}\n"


def test_small_tracebacks_of_round_one(tmp_path, run, capsys):
    d = tmp_path / "run"
    shutil.copytree(run, d)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"step": 3')  # a killed run's half-written row
    r = run_cli("train.py", "--resume", "--out-dir", str(d), "--max-iters", "400")
    assert r.returncode == 0, r.stderr
    assert all(json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines())
    sparse = tmp_path / "sparse.pt"
    torch.save({"token_embedding_table.weight": torch.eye(65).to_sparse()}, sparse)
    one_line(run_cli("import_torch.py", "--state-dict", str(sparse), "--out-dir", str(tmp_path / "i")), 2, "dense")
    nan = tmp_path / "nan.pt"
    torch.save({"token_embedding_table.weight": torch.full((65, 65), float("nan"))}, nan)
    one_line(run_cli("import_torch.py", "--state-dict", str(nan), "--out-dir", str(tmp_path / "i")), 2, "NaN")
    (tmp_path / "one.txt").write_text("a")
    rc = parity.main(["--data", str(tmp_path / "one.txt")])
    one_line(subprocess.CompletedProcess("parity", rc, *capsys.readouterr()), 2, "too short")


def test_a_fifo_state_dict_is_refused_at_once(tmp_path):
    """import_torch.py --state-dict on a FIFO: one line, no wait for a writer that never comes."""
    fifo = tmp_path / "table.pt"
    os.mkfifo(fifo)
    one_line(run_cli("import_torch.py", "--state-dict", str(fifo), "--out-dir", str(tmp_path / "run")), 2,
             "not a regular file")


def test_export_never_writes_through_a_link(tmp_path):
    """A dangling link where the tokenizer file goes: refused, its target never created, no .pt written."""
    target = tmp_path / "elsewhere.json"
    (tmp_path / "X.tokenizer.json").symlink_to(target)
    r = run_cli("export_torch.py", "--checkpoint", str(ROOT / "tests" / "fixtures" / "v010_run"), "--out",
                str(tmp_path / "X.pt"))
    one_line(r, 2, "exists")
    assert not target.exists() and not (tmp_path / "X.pt").exists()
