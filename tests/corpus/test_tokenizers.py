"""Tokenizers (bigram_jax/corpus/tokenizers.py): characters, token ids, nanoGPT's meta.pkl read safely."""
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

from bigram_jax.corpus.tokenizers import CharTokenizer, read_meta_pkl
from bigram_jax.errors import UserError
from tests.conftest import ROOT, _line, nanogpt_char_folder, one_line, run_cli


def test_vocab_is_sorted_set_of_corpus(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    assert tok.vocab_size == 65
    assert list(tok.vocab) == sorted(set(shakespeare_text))
    assert tok.vocab[0] == "\n" and tok.vocab[1] == " "


def test_round_trip_whole_corpus(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    ids = tok.encode(shakespeare_text)
    assert ids.dtype == np.int32 and len(ids) == len(shakespeare_text) == 1_115_394
    assert tok.decode(ids) == shakespeare_text
    assert tok.decode(tok.encode("hii there")) == "hii there"
    assert tok.encode("hi").tolist() == [tok.vocab.index("h"), tok.vocab.index("i")]


def test_unknown_character_is_named():
    tok = CharTokenizer("abc")
    with pytest.raises(UserError, match=r"'z'.*'é'|'é'.*'z'"):
        tok.encode("abzé")
    with pytest.raises(UserError, match="in \\[0, 3\\)"):
        tok.decode([0, 3])


def test_token_ids_tokenizer():
    from bigram_jax.corpus.tokenizers import TokenIds, from_record

    tok = TokenIds(100)
    assert tok.encode("3 14, 15").tolist() == [3, 14, 15] and tok.decode([3, 14, 15]) == "3 14 15"
    assert from_record(None, None, 100) == tok and from_record(None, "ab", 2) == CharTokenizer("ab")
    with pytest.raises(UserError, match="token ids must be in"):
        tok.encode("100")
    with pytest.raises(UserError, match="whitespace-separated integers"):
        tok.encode("hello")


def _meta_pkl(folder: Path, text: str) -> Path:
    chars = sorted(set(text))
    path = folder / "meta.pkl"
    path.write_bytes(pickle.dumps({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                                   "stoi": {c: i for i, c in enumerate(chars)}}))
    return path


@pytest.mark.usefixtures("own_cache")
def test_a_text_read_with_a_character_meta_pkl_trains_as_the_text(tmp_path, shakespeare_path, shakespeare_text):
    """nanoGPT's character table on the text itself (not its .bin): the same data and floor lines as the run on
    the text's own characters (the table holds none of the probes' digits: no probe applies to characters)."""
    meta = _meta_pkl(tmp_path, shakespeare_text)
    lines = []
    for extra in ([], ["--tokenizer", str(meta)]):
        r = run_cli("train.py", "--data", str(shakespeare_path), "--max-iters", "20", "--eval-interval", "20",
                    "--sample-tokens", "0", "--out-dir", str(tmp_path / f"r{len(extra)}"), *extra)
        assert r.returncode == 0, r.stderr
        lines.append([x for x in r.stdout.splitlines() if x.startswith(("floor:", "step"))])
    assert lines[0] == lines[1]


@pytest.mark.usefixtures("own_cache")
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_meta_pkl_of_every_pickle_protocol_reads(protocol, tmp_path):
    meta = nanogpt_char_folder("hello, world\nthe quick brown fox", tmp_path, protocol)
    tok = read_meta_pkl(tmp_path / "meta.pkl")
    assert tok.vocab == "".join(sorted(set("hello, world\nthe quick brown fox"))) == "".join(meta["itos"].values())
    assert tok.decode(tok.encode("the fox")) == "the fox"


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


@pytest.mark.usefixtures("own_cache")
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
    r = run_cli("train.py", "--data", str(folder / "train.bin"), "--max-iters", "10", "--out-dir",
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
        **_unprintable_metas(meta),
    }


def _nested_pickle(depth: int) -> bytes:
    """Pickle opcodes of a list nested `depth` deep, built without recursion: `depth` EMPTY_LISTs, each APPENDed
    to the one before (pickle.dumps would overflow the stack making it; the unpickler does not loading it)."""
    return b"]" * depth + b"a" * (depth - 1)


def _unprintable_metas(meta: dict) -> dict[str, bytes]:
    """Issue 28 item 8: values that the old error message could not format (a 5000-digit int raises ValueError in
    str(), a list 100,000 deep RecursionError in repr), and a table with a lone surrogate, which trained and then
    broke sample.py and export_torch.py (UnicodeEncodeError)."""
    without = {k: v for k, v in meta.items() if k != "vocab_size"}
    head = pickle.dumps(without, protocol=2)[:-1]  # the dict on the stack; STOP dropped, a SETITEM added below
    key = b"X" + len(b"vocab_size").to_bytes(4, "little") + b"vocab_size"
    surrogate = dict(meta["itos"])
    surrogate[1] = "\ud800"
    return {
        "vocab_size of 5000 digits": pickle.dumps({**meta, "vocab_size": 10**5000 + 7}),
        "vocab_size nested 100k deep": head + key + _nested_pickle(100_000) + b"s.",
        "itos with a lone surrogate": pickle.dumps({**meta, "itos": surrogate,
                                                    "stoi": {c: i for i, c in surrogate.items()}}),
    }


@pytest.mark.parametrize(("what", "words"), [("vocab_size of 5000 digits", "an integer of"),
                                             ("vocab_size nested 100k deep", "nests values more than 8 deep"),
                                             ("itos with a lone surrogate", "id 1 is U+D800, a lone surrogate")])
def test_a_meta_pkl_value_is_never_formatted_whole(what, words, tmp_path):
    """read_meta_pkl says what is wrong in bounded words (the old message formatted the value itself)."""
    meta = {"vocab_size": 3, "itos": {0: "a", 1: "b", 2: "c"}, "stoi": {"a": 0, "b": 1, "c": 2}}
    (tmp_path / "meta.pkl").write_bytes(_bad_metas(meta)[what])
    with pytest.raises(UserError, match=re.escape(words)) as e:
        read_meta_pkl(tmp_path / "meta.pkl")
    assert len(str(e.value)) < 400 and "\n" not in str(e.value)


@pytest.mark.usefixtures("own_cache")
@pytest.mark.parametrize("what", list(_bad_metas({"vocab_size": 3, "itos": {0: "a", 1: "b", 2: "c"},
                                                  "stoi": {"a": 0, "b": 1, "c": 2}})))
def test_a_bad_meta_pkl_is_one_line(what, tmp_path, shakespeare_text):
    folder, meta = _small_folder(tmp_path, shakespeare_text)
    (folder / "meta.pkl").write_bytes(_bad_metas(meta)[what])
    r = run_cli("train.py", "--data", str(folder / "train.bin"), "--max-iters", "10", "--out-dir",
                str(tmp_path / "out"))
    one_line(r, 2, "meta.pkl")
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
@pytest.mark.usefixtures("own_cache")
def test_a_huge_memo_index_costs_no_memory(tmp_path, shakespeare_text):
    """A valid meta.pkl whose first PUT stores its dict at memo index 2**31 - 1 (never fetched): an unpickler whose
    memo is an array sized by that index asks for ~32 GB. Read, or refused in one line; never a MemoryError's
    traceback (the process may have 4 GiB of address space, as JAX needs far less). A process of its own: the
    limit is the process's."""
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


@pytest.mark.usefixtures("own_cache")
def test_tokenizer_none_ignores_a_meta_pkl_beside_the_data(tmp_path, shakespeare_text):
    folder, _ = _small_folder(tmp_path, shakespeare_text)
    pwned = tmp_path / "PWNED_FILE"
    (folder / "meta.pkl").write_bytes(pickle.dumps(_Shell(f"touch {pwned}")))
    r = run_cli("train.py", "--data", str(folder / "train.bin"), "--tokenizer", "none", "--max-iters", "20",
                "--eval-interval", "10", "--sample-tokens", "30", "--out-dir", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "tokenizer: none (token ids)" in _line(r.stdout, "data:") and not pwned.exists()
    sample = json.loads((tmp_path / "out" / "summary.json").read_text())["sample"]
    assert re.fullmatch(r"\d+( \d+){30}", sample), sample  # the start and 30 ids, as ids
    r = run_cli("sample.py", "--checkpoint", str(tmp_path / "out"), "--num-tokens", "10")
    assert r.returncode == 0 and re.fullmatch(r"\d+( \d+){10}\n", r.stdout), (r.stdout, r.stderr)
    assert not pwned.exists()
