"""Resume (bigram_jax/checkpoint/resume.py): bit-identical, older formats, other data or tokenizer refused."""
from __future__ import annotations

import shutil
from pathlib import Path
import signal
import time

import pytest

from bigram_jax import load_checkpoint
from tests.conftest import (
    ROOT,
    TK_NAME,
    _assert_same,
    _digest,
    _final_state,
    _paragraphs,
    ok,
    one_line,
    popen_script,
    run_cli,
    steps,
    written_here,
)
from tests.conftest import metric_rows as _rows

FAST = ["--sample-tokens", "0", "--batch-size", "16", "--block-size", "16"]


def test_resume_is_bit_identical(tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    ok(run_cli("train.py", "--max-iters", "600", "--out-dir", str(full), *FAST))
    ok(run_cli("train.py", "--max-iters", "300", "--out-dir", str(half), *FAST))
    r = ok(run_cli("train.py", "--resume", "--max-iters", "600", "--out-dir", str(half), "--sample-tokens", "0"))
    assert "resumed from" in r.stdout and "step 300:" not in r.stdout and "step 600:" in r.stdout
    _assert_same(full, half)
    meta = _final_state(half)[1]
    assert meta["data_sha256"].startswith("86c4e6aa") and meta["vocab"][:2] == "\n " and "jax" in meta["versions"]
    # a fresh run into a directory with checkpoints is refused and changes nothing
    before = _digest(half)
    r = run_cli("train.py", "--out-dir", str(half))
    assert r.returncode == 2 and "--resume" in r.stderr and _digest(half) == before


@pytest.mark.e2e
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    """A run killed in its own process; the resume and the uninterrupted run in this one."""
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["--eval-interval", "500", "--checkpoint-every", "500", "--chunk-seconds", "0.05", "--batch-size", "64",
            "--block-size", "64", "--sample-tokens", "0"]
    p = popen_script("train.py", "--max-iters", "1000000", "--out-dir", str(killed), *args)
    try:
        deadline = time.monotonic() + 300  # a hang guard only
        while len(list((killed / "checkpoints").glob("[0-9]*"))) < 3:
            assert time.monotonic() < deadline and p.poll() is None, p.poll()
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    assert p.returncode == -signal.SIGKILL
    # an unfinished save (as a kill mid-write leaves it) is ignored, not loaded
    junk = killed / "checkpoints" / "99999999.orbax-checkpoint-tmp-1"
    junk.mkdir()
    (junk / "garbage").write_bytes(b"\x00" * 10)
    target = str(steps(killed)[-1] + 1000)
    ok(run_cli("train.py", "--resume", "--max-iters", target, "--out-dir", str(killed)))
    ok(run_cli("train.py", "--max-iters", target, "--out-dir", str(clean), *args))
    _assert_same(killed, clean)


def test_resume_refuses_other_data(run, tmp_path, shakespeare_text):
    run = shutil.copytree(run, tmp_path / "run")
    before = _digest(run)
    other = tmp_path / "other.txt"
    other.write_text(shakespeare_text[::-1])  # same 65 characters, another file
    args = ["--resume", "--out-dir", str(run), "--data", str(other), "--max-iters", "400"]
    r = run_cli("train.py", *args)
    assert r.returncode == 2 and "data file differs" in r.stderr and "--allow-mismatch" in r.stderr
    assert _digest(run) == before
    small = tmp_path / "small.txt"
    small.write_text("hello world, " * 100)
    r = run_cli("train.py", "--resume", "--out-dir", str(run), "--data", str(small), "--allow-mismatch")
    assert r.returncode == 2 and "cannot be resumed" in r.stderr and _digest(run) == before
    r = run_cli("train.py", *args, "--allow-mismatch")
    assert r.returncode == 0 and "step 400:" in r.stdout, r.stderr


V010_RUN, TINY = ROOT / "tests" / "fixtures" / "v010_run", ROOT / "tests" / "fixtures" / "tiny.txt"


def test_a_run_written_by_v010_loads_and_resumes_as_todays_run(tmp_path):
    """tests/fixtures/v010_run: 20 steps on tiny.txt written by bigram-jax 0.1.0, before the redesign."""
    ck = load_checkpoint(V010_RUN)
    assert ck.step == 20 and ck.vocab == "".join(sorted(set(TINY.read_text())))
    old = tmp_path / "old"
    shutil.copytree(V010_RUN, old)
    r = run_cli("train.py", "--resume", "--out-dir", str(old), "--data", str(TINY), "--max-iters", "30",
                "--sample-tokens", "0")
    assert r.returncode == 0 and "step 30:" in r.stdout, r.stderr
    fresh = tmp_path / "fresh"  # today's code from scratch: the same losses at 0, 10, 20 as 0.1.0 logged
    ok(run_cli("train.py", "--out-dir", str(fresh), "--data", str(TINY), "--max-iters", "30", "--eval-interval", "10",
               "--keep-checkpoints", "1", "--sample-tokens", "0"))
    _assert_same(old, fresh, exact=written_here(V010_RUN))  # bit for bit on jax 0.10.2, which wrote it


def _samples_and_resumes_as_a_fresh_run(source: Path, data: Path, tmp_path: Path) -> None:
    """`source` (a fixture run at step 20) samples, resumes to 30, and ends where a run from scratch here ends: bit
    for bit on the stack that wrote it, within ACROSS_STACKS on the other."""
    r = run_cli("sample.py", "--checkpoint", str(source), "--num-tokens", "10")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    old = tmp_path / "old"
    shutil.copytree(source, old)
    r = run_cli("train.py", "--resume", "--out-dir", str(old), "--data", str(data), "--max-iters", "30",
                "--sample-tokens", "0")
    assert r.returncode == 0 and "step 30:" in r.stdout, r.stderr
    fresh = tmp_path / "fresh"  # today's code from scratch: the same losses at 0, 10, 20, 30 and the same state
    ok(run_cli("train.py", "--out-dir", str(fresh), "--data", str(data), "--max-iters", "30", "--eval-interval", "10",
               "--keep-checkpoints", "1", "--sample-tokens", "0"))
    _assert_same(old, fresh, exact=written_here(source))


@pytest.mark.parametrize("fixture, data", [("f6817d1_run", "tiny.txt"), ("f6817d1_ids_run", "tiny.bin")])
def test_a_run_written_before_the_metadata_checksum_loads_and_resumes(tmp_path, fixture, data):
    """tests/fixtures/f6817d1_*: 20 steps on tiny.txt (text) and tiny.bin (its ids) written by commit f6817d1, the
    format before metadata checksums and tokenizer records: they load, sample and resume as today's runs."""
    source, data = ROOT / "tests" / "fixtures" / fixture, ROOT / "tests" / "fixtures" / data
    ck = load_checkpoint(source)
    assert ck.step == 20 and "meta_sha256" not in ck.meta
    _samples_and_resumes_as_a_fresh_run(source, data, tmp_path)


def test_a_run_written_on_jax_0_12_loads_samples_and_resumes_here(tmp_path):
    """tests/fixtures/jax012_run: 20 steps on tiny.txt written on Python 3.13 with jax 0.12.1 (the newest stack):
    it loads, samples and resumes on either stack (the f6817d1 and v010 runs: the same, from jax 0.10.2)."""
    source = ROOT / "tests" / "fixtures" / "jax012_run"
    ck = load_checkpoint(source)
    assert ck.step == 20 and ck.meta["versions"]["jax"] == "0.12.1" and "meta_sha256" in ck.meta
    _samples_and_resumes_as_a_fresh_run(source, TINY, tmp_path)


@pytest.mark.usefixtures("own_cache", "tiktoken_plugin")
def test_bpe_run_resumes(bpe, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bpe.run, run)
    r = ok(run_cli("train.py", "--resume", "--out-dir", str(run), "--max-iters", "150", "--sample-tokens", "0"))
    assert "resumed from" in r.stdout and "step 150:" in r.stdout and "step 100:" not in r.stdout
    assert sorted(_rows(run)) == [0, 50, 100, 150] and f"tokenizer: {bpe.shown}" in r.stdout


@pytest.mark.usefixtures("own_cache", "tiktoken_plugin")
@pytest.mark.parametrize("other", ["the other BPE", "chars", "same-size tokenizer.json"])
def test_resume_with_another_tokenizer_is_refused(bpe, other, hf_json, shakespeare_text, tmp_path):
    if other == "the other BPE":
        spec = TK_NAME if bpe.kind == "json" else str(hf_json)
    elif other == "chars":
        spec = "chars"
    else:  # as many tokens as the run's, other merges: the vocabulary size alone cannot tell them apart
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        V = load_checkpoint(bpe.run).meta["vocab_size"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(_paragraphs(shakespeare_text[: len(shakespeare_text) // 3]), trainers.BpeTrainer(
            vocab_size=V, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        assert tok.get_vocab_size() == V
        spec = str(tmp_path / "other-tokenizer.json")
        tok.save(spec)
    run = tmp_path / "run"
    shutil.copytree(bpe.run, run)
    before = _digest(run)
    r = run_cli("train.py", "--resume", "--out-dir", str(run), "--max-iters", "150", "--tokenizer", spec)
    one_line(r, 2, "tokenizer differs")
    assert _digest(run) == before


def test_smaller_cases(tmp_path, run):
    one_line(run_cli("train.py", "--top-k", "100", "--out-dir", str(tmp_path / "o")), 2, "more than the vocabulary")
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "config.json").write_text("{}")
    one_line(run_cli("train.py", "--resume", "--out-dir", str(tmp_path / "killed")), 2, "holds no checkpoint",
             "start fresh")
    d = tmp_path / "run"
    shutil.copytree(run, d)
    one_line(run_cli("train.py", "--resume", "--out-dir", str(d), "--max-iters", "200"), 2, "past --max-iters")


def test_resume_after_the_tokenizer_file_changed_says_what_changed(tmp_path, shakespeare_text):
    """Issue 28 item 12: the meta.pkl beside the data rewritten (two characters swapped) since the checkpoint: the
    refusal says that file changed and how (its digests), not 'tokenizer differs (X vs X)' with one name twice."""
    import pickle

    from tests.conftest import nanogpt_char_folder

    folder = tmp_path / "data"
    meta = nanogpt_char_folder(shakespeare_text[:100_000], folder)
    run = tmp_path / "run"
    data = ["--data", str(folder / "train.bin"), "--val-data", str(folder / "val.bin")]
    ok(run_cli("train.py", *data, "--max-iters", "20", "--eval-interval", "10", "--out-dir", str(run), *FAST))
    itos = dict(meta["itos"])
    itos[1], itos[2] = itos[2], itos[1]
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": meta["vocab_size"], "itos": itos,
                                                    "stoi": {c: i for i, c in itos.items()}}))
    r = run_cli("train.py", "--resume", "--out-dir", str(run), "--max-iters", "40")
    one_line(r, 2, f"the tokenizer file {folder / 'meta.pkl'} changed since the checkpoint (digest ", " -> ")
    assert r.stderr.count(str(folder / "meta.pkl")) == 1, r.stderr
