"""nanoGPT's ways: its shakespeare_char data folder (train.bin, val.bin, meta.pkl; written here from its
description), meta.pkl read safely, its flag spelling, and the commands around a run (sample.py, export_torch.py,
the console commands)."""
from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigram_jax.corpus.tokenizers import read_meta_pkl
from tests.conftest import ROOT, run_script
from tests.test_checkpoint import _final_state, _leaves
from tests.test_faults import one_line

SAME = ["--max-iters", "300", "--eval-interval", "100", "--sample-tokens", "200"]


pytestmark = pytest.mark.usefixtures("own_cache")  # (conftest.py)


def script(name: str, *args: str, **kw) -> subprocess.CompletedProcess:
    """run_script with this test's cache."""
    return run_script(name, *args, env={"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}, **kw)


def nanogpt_char_folder(text: str, folder: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict:
    """shakespeare_char's prepare step, from its description: the sorted characters, stoi/itos, the first 90% of
    the characters to train.bin and the rest to val.bin (flat uint16), and meta.pkl. Returns the meta."""
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    ids = np.array([stoi[ch] for ch in text], dtype=np.uint16)
    n = int(len(text) * 0.9)
    folder.mkdir(parents=True, exist_ok=True)
    ids[:n].tofile(folder / "train.bin")
    ids[n:].tofile(folder / "val.bin")
    meta = {"vocab_size": len(chars), "itos": itos, "stoi": stoi}
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump(meta, f, protocol=protocol)
    return meta


@pytest.fixture(scope="module")
def pair(tmp_path_factory, shakespeare_path, shakespeare_text) -> dict:
    """The text run and the nanoGPT-folder run, same flags, each with its own cache."""
    base = tmp_path_factory.mktemp("nanogpt")
    nanogpt_char_folder(shakespeare_text, base / "shakespeare_char")
    out = {}
    for name, data in [("text", ["--data", str(shakespeare_path)]),
                       ("bin", ["--data", str(base / "shakespeare_char" / "train.bin"), "--val-data",
                                str(base / "shakespeare_char" / "val.bin")])]:
        r = run_script("train.py", *data, *SAME, "--out-dir", str(base / name),
                       env={"XDG_CACHE_HOME": str(base / f"cache-{name}")})
        assert r.returncode == 0, r.stderr
        out[name] = (base / name, r.stdout)
    out["folder"] = base / "shakespeare_char"
    return out


def _line(stdout: str, prefix: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(prefix))


def _rows(run: Path) -> dict[int, tuple[float, float]]:
    return {r["step"]: (r["train_loss"], r["val_loss"]) for r in
            map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


# 1. nanoGPT's shakespeare_char folder trains as the text does ---------------------------------------------

def test_nanogpt_folder_finds_its_meta_pkl_and_says_so(pair):
    data = _line(pair["bin"][1], "data:")
    folder = pair["folder"]
    assert str(folder / "train.bin") in data and str(folder / "val.bin") in data, data
    assert str(folder / "meta.pkl") in data and "found beside --data" in data and "vocab 65" in data, data
    sizes = lambda line: re.search(r"\(([\d,]+ train / [\d,]+ val tokens, vocab \d+)", line).group(1)  # noqa: E731
    assert sizes(data) == sizes(_line(pair["text"][1], "data:")) == "1,003,854 train / 111,540 val tokens, vocab 65"


def test_nanogpt_folder_trains_bit_identically_to_the_text(pair):
    (text_run, text_out), (bin_run, bin_out) = pair["text"], pair["bin"]
    assert _line(bin_out, "floor:") == _line(text_out, "floor:")
    assert _rows(bin_run) == _rows(text_run) and sorted(_rows(bin_run)) == [0, 100, 200, 300]
    (a, meta_a), (b, meta_b) = _final_state(text_run), _final_state(bin_run)
    assert int(a.step) == int(b.step) == 300
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert meta_a["vocab"] == meta_b["vocab"] and meta_b["tokenizer"]["kind"] == "meta.pkl"
    sample = lambda run: json.loads((run / "summary.json").read_text())["sample"]  # noqa: E731
    assert sample(bin_run) == sample(text_run) and len(sample(bin_run)) == 201  # the id-0 start, then 200


def test_sample_speaks_the_meta_pkl_text(pair):
    r = script("sample.py", "--checkpoint", str(pair["bin"][0]), "--prompt", "ROMEO:", "--num-tokens", "100")
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:") and len(r.stdout) == 6 + 100 + 1, (r.stdout, r.stderr)
    same = script("sample.py", "--checkpoint", str(pair["text"][0]), "--prompt", "ROMEO:", "--num-tokens", "100")
    assert same.stdout == r.stdout  # same table, same seed, same characters


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_meta_pkl_of_every_pickle_protocol_reads(protocol, tmp_path):
    meta = nanogpt_char_folder("hello, world\nthe quick brown fox", tmp_path, protocol)
    tok = read_meta_pkl(tmp_path / "meta.pkl")
    assert tok.vocab == "".join(sorted(set("hello, world\nthe quick brown fox"))) == "".join(meta["itos"].values())
    assert tok.decode(tok.encode("the fox")) == "the fox"


# 2. meta.pkl is read safely ---------------------------------------------------------------------------------

class _Shell:
    """Unpickled, runs a shell command."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _Exec:
    """Unpickled, runs Python code."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


def _small_folder(tmp_path: Path, shakespeare_text: str) -> tuple[Path, dict]:
    folder = tmp_path / "data"
    return folder, nanogpt_char_folder(shakespeare_text[:20000], folder)


@pytest.mark.parametrize("how", ["os.system, whole", "os.system, in itos, protocol 0", "exec, in stoi",
                                 "exec, protocol 2"])
def test_a_malicious_meta_pkl_is_refused_unrun(how, tmp_path, shakespeare_text):
    folder, meta = _small_folder(tmp_path, shakespeare_text)
    pwned = tmp_path / "PWNED_FILE"
    evil = _Shell(f"touch {pwned}") if how.startswith("os.system") else _Exec(f"open({str(pwned)!r}, 'w').close()")
    payload = {"os.system, whole": evil, "os.system, in itos, protocol 0": {**meta, "itos": evil},
               "exec, in stoi": {**meta, "stoi": evil}, "exec, protocol 2": [meta, evil]}[how]
    data = pickle.dumps(payload, protocol=0 if "protocol 0" in how else 2 if "protocol 2" in how else None)
    pickle.loads(data)  # the payload is live: an ordinary unpickler runs it
    assert pwned.exists()
    pwned.unlink()
    (folder / "meta.pkl").write_bytes(data)
    r = script("train.py", "--data", str(folder / "train.bin"), "--max-iters", "10", "--out-dir",
               str(tmp_path / "out"), cwd=tmp_path)
    one_line(r, 2, "meta.pkl")
    assert not pwned.exists() and not (tmp_path / "out").exists()


def _bad_metas(meta: dict) -> dict[str, bytes]:
    chars = [meta["itos"][i] for i in range(meta["vocab_size"])]
    swapped = dict(meta["stoi"], **{chars[0]: 1, chars[1]: 0})
    good = pickle.dumps(meta)
    return {
        "itos is a set": pickle.dumps({**meta, "itos": set(chars)}),
        "itos holds bytes": pickle.dumps({**meta, "itos": {i: c.encode() for i, c in enumerate(chars)}}),
        "stoi is bytes": pickle.dumps({**meta, "stoi": b"".join(c.encode() for c in chars)}),
        "wrong stoi": pickle.dumps({**meta, "stoi": swapped}),
        "itos of two characters": pickle.dumps({**meta, "itos": {i: c * 2 for i, c in enumerate(chars)}}),
        "itos with a str key too": pickle.dumps({**meta, "itos": {**meta["itos"], "x": chars[0]}}),
        "itos with a None key too": pickle.dumps({**meta, "itos": {**meta["itos"], None: chars[0]}}),
        "an id missing from itos": pickle.dumps({**meta, "itos": {i + 1: c for i, c in enumerate(chars)}}),
        "vocab_size wrong": pickle.dumps({**meta, "vocab_size": meta["vocab_size"] - 1}),
        "not a dict": pickle.dumps(chars),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "not a pickle": b"vocab_size: 65\n",
    }


@pytest.mark.parametrize("what", list(_bad_metas({"vocab_size": 3, "itos": {0: "a", 1: "b", 2: "c"},
                                                  "stoi": {"a": 0, "b": 1, "c": 2}})))
def test_a_bad_meta_pkl_is_one_line(what, tmp_path, shakespeare_text):
    folder, meta = _small_folder(tmp_path, shakespeare_text)
    (folder / "meta.pkl").write_bytes(_bad_metas(meta)[what])
    r = script("train.py", "--data", str(folder / "train.bin"), "--max-iters", "10", "--out-dir",
               str(tmp_path / "out"))
    one_line(r, 2, "meta.pkl")
    assert not (tmp_path / "out").exists()


def test_a_huge_memo_index_costs_no_memory(tmp_path, shakespeare_text):
    """A valid meta.pkl whose first PUT stores its dict at memo index 2**31 - 1 (never fetched): an unpickler whose
    memo is an array sized by that index asks for ~32 GB. Read, or refused in one line; never a MemoryError's
    traceback (the process may have 4 GiB of address space, as JAX needs far less)."""
    folder, meta = _small_folder(tmp_path, shakespeare_text)
    data = pickle.dumps(meta, protocol=0)
    assert data.count(b"p0\n") == 1
    data = data.replace(b"p0\n", b"p2147483647\n")
    assert pickle._Unpickler(io.BytesIO(data)).load() == meta  # a valid pickle of the meta (a dict memo: no cost)
    (folder / "meta.pkl").write_bytes(data)
    cap = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
           "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")  # (no preexec_fn: no fork under JAX)
    r = subprocess.run([sys.executable, "-c", cap, str(ROOT / "scripts" / "train.py"), "--data",
                        str(folder / "train.bin"), "--max-iters", "10", "--sample-tokens", "0", "--out-dir",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    if r.returncode != 0:
        one_line(r, 2, "meta.pkl")
    else:
        assert "step 10:" in r.stdout and "Traceback" not in r.stderr, r.stderr


def test_tokenizer_none_ignores_a_meta_pkl_beside_the_data(tmp_path, shakespeare_text):
    folder, _ = _small_folder(tmp_path, shakespeare_text)
    pwned = tmp_path / "PWNED_FILE"
    (folder / "meta.pkl").write_bytes(pickle.dumps(_Shell(f"touch {pwned}")))
    r = script("train.py", "--data", str(folder / "train.bin"), "--tokenizer", "none", "--max-iters", "20",
               "--eval-interval", "10", "--sample-tokens", "30", "--out-dir", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "tokenizer: none (token ids)" in _line(r.stdout, "data:") and not pwned.exists()
    sample = json.loads((tmp_path / "out" / "summary.json").read_text())["sample"]
    assert re.fullmatch(r"\d+( \d+){30}", sample), sample  # the start and 30 ids, as ids
    r = script("sample.py", "--checkpoint", str(tmp_path / "out"), "--num-tokens", "10")
    assert r.returncode == 0 and re.fullmatch(r"\d+( \d+){10}\n", r.stdout), (r.stdout, r.stderr)
    assert not pwned.exists()


# 5. habits -------------------------------------------------------------------------------------------------

def test_nanogpt_flag_spelling_is_accepted(tmp_path):
    out = tmp_path / "out"
    r = script("train.py", "--batch_size=64", "--learning_rate=1e-3", "--max_iters=20", "--sample_tokens=0",
               "--eval_interval=10", "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["batch_size"], cfg["learning_rate"], cfg["max_iters"], cfg["sample_tokens"]) == (64, 0.001, 20, 0)
    assert sorted(_rows(out)) == [0, 10, 20]


def test_an_abbreviated_flag_is_refused(tmp_path):
    r = script("train.py", "--lr", "0.1", "--max-iters", "10", "--out-dir", str(tmp_path / "out"))
    one_line(r, 2, "unrecognized arguments: --lr")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, flag", [("bigram-jax-train", "--batch-size"), ("bigram-jax-sample", "--num-tokens")])
def test_console_commands_name_themselves(command, flag):
    exe = Path(sys.executable).parent / command
    if not exe.is_file():
        pytest.skip(f"{command} is not installed (pip install -e .)")
    r = subprocess.run([str(exe), flag, "x"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    one_line(r, 2, "'x'")
    assert r.stderr.startswith(f"{command}:"), r.stderr


def test_sample_puts_only_the_samples_on_stdout(pair):
    r = script("sample.py", "--checkpoint", str(pair["text"][0]), "--prompt", "ROMEO:", "--num-tokens", "50",
               "--num-samples", "2")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 2 * (6 + 50 + 1) and r.stdout.startswith("ROMEO:"), r.stdout
    assert r.stdout[6 + 50:].startswith("\nROMEO:") and r.stdout.endswith("\n")
    assert "sample" not in r.stdout and "sample 1" in r.stderr and "sample 2" in r.stderr


def test_export_writes_the_table_and_its_tokenizer(pair, tmp_path, shakespeare_text):
    pytest.importorskip("torch")
    import torch

    out = tmp_path / "X.pt"
    r = script("export_torch.py", "--checkpoint", str(pair["bin"][0]), "--out", str(out))
    assert r.returncode == 0, r.stderr
    beside = tmp_path / "X.tokenizer.json"
    assert out.is_file() and beside.is_file()
    info = json.loads(beside.read_text())
    assert info["vocab_size"] == 65 and info["tokenizer"]["kind"] == "meta.pkl"
    assert info["tokenizer"]["vocab"] == "".join(sorted(set(shakespeare_text)))  # the meta's characters, in id order
    assert info["tokenizer"]["source"] == str(pair["folder"] / "meta.pkl")
    table = torch.load(out)["token_embedding_table.weight"]
    assert tuple(table.shape) == (65, 65)
    r = script("export_torch.py", "--checkpoint", str(pair["bin"][0]), "--out", str(out))
    one_line(r, 2, "exists")
