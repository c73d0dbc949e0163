"""--compact-vocab: the table over the ids a corpus uses, exact as the full table, mapped back to the tokenizer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bigram_jax.corpus import compact
from bigram_jax.counts import PairCounts
from bigram_jax.errors import UserError
from tests.conftest import _assert_same, one_line, run_cli

STEPS = ["--max-iters", "40", "--eval-interval", "20", "--batch-size", "16", "--block-size", "16"]


def _ids_in_order(tok, text: str) -> np.ndarray:
    return np.asarray(tok.encode(text, add_special_tokens=False).ids, np.int64)


@pytest.fixture(scope="module")
def bpe_bin(tmp_path_factory, hf_json, shakespeare_text) -> dict:
    """A nanoGPT-style token file: the first 60,000 characters of tinyshakespeare in the byte-level BPE of
    `hf_json` (vocab 500), with the tokenizer beside it; plus a compact run of 40 steps on it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(hf_json))
    ids = _ids_in_order(tok, shakespeare_text[:60_000])
    folder = tmp_path_factory.mktemp("compact")
    (folder / "train.bin").write_bytes(ids.astype("<u2").tobytes())
    out = folder / "run"
    r = run_cli("train.py", "--data", str(folder / "train.bin"), "--tokenizer", str(hf_json), "--compact-vocab",
                *STEPS, "--out-dir", str(out), "--sample-tokens", "50")
    assert r.returncode == 0, r.stderr
    return {"ids": ids, "folder": folder, "run": out, "stdout": r.stdout, "tok": tok, "json": hf_json}


def test_the_table_holds_only_the_ids_the_corpus_uses(bpe_bin):
    used = np.unique(bpe_bin["ids"])
    summary = json.loads((bpe_bin["run"] / "summary.json").read_text())
    assert summary["vocab_size"] == len(used) < 500
    data_line = next(x for x in bpe_bin["stdout"].splitlines() if x.startswith("data:"))
    assert f"{len(used):,} of 500 ids used" in data_line


def test_exact_losses_equal_a_float64_brute_force_over_every_position(bpe_bin):
    from bigram_jax.checkpoint.load import load_checkpoint
    from bigram_jax.model import table_of

    ck = load_checkpoint(bpe_bin["run"])
    table = np.asarray(table_of(ck.params), np.float64)  # (V_c, V_c)
    ids = bpe_bin["ids"]
    rows = np.searchsorted(np.unique(ids), ids)  # each token's row: the used ids in ascending order
    logp = table - np.log(np.exp(table - table.max(1, keepdims=True)).sum(1, keepdims=True)) - table.max(1, keepdims=True)
    n_train = int(0.9 * len(ids))
    want = [-logp[r[:-1], r[1:]].mean() for r in (rows[:n_train], rows[n_train:])]
    last = json.loads((bpe_bin["run"] / "metrics.jsonl").read_text().splitlines()[-1])
    np.testing.assert_allclose([last["train_loss"], last["val_loss"]], want, rtol=2e-6)


def test_the_train_floor_is_the_full_tables(bpe_bin):
    """Ids a split never holds add nothing to its best loss: the floor over the used ids is the full table's."""
    from bigram_jax import evaluate

    ids = bpe_bin["ids"]
    n_train = int(0.9 * len(ids))
    full = PairCounts.of(ids[:n_train], 500)
    summary = json.loads((bpe_bin["run"] / "summary.json").read_text())
    assert summary["floor_train_loss"] == pytest.approx(evaluate.floor_train(full), rel=1e-12)


def test_samples_are_the_tokenizers_ids_decoded(bpe_bin):
    """sample.py maps the table's rows back to the tokenizer's ids: its text is the base tokenizer's decoding of
    ids[rows] of the same draw."""
    import jax

    from bigram_jax.checkpoint.load import load_checkpoint
    from bigram_jax.sampling import generate

    r = run_cli("sample.py", "--checkpoint", str(bpe_bin["run"]), "--num-tokens", "60", "--prompt", "ROMEO:")
    assert r.returncode == 0, r.stderr
    ck = load_checkpoint(bpe_bin["run"])
    used = np.unique(bpe_bin["ids"])
    prompt = np.searchsorted(used, bpe_bin["tok"].encode("ROMEO:", add_special_tokens=False).ids)
    rows = np.asarray(generate(ck.params, jax.random.key(1337), prompt[None].astype(np.int32), 60))[0]
    assert r.stdout == bpe_bin["tok"].decode(used[rows].tolist(), skip_special_tokens=False) + "\n"
    assert r.stdout.startswith("ROMEO:")


def test_a_prompt_outside_the_table_is_one_line(bpe_bin):
    unused = int(np.setdiff1d(np.arange(500), np.unique(bpe_bin["ids"]))[0])
    r = run_cli("sample.py", "--checkpoint", str(bpe_bin["run"]), "--prompt-ids", f"{unused}")
    one_line(r, 2, f"token id {unused}", "not in this compact table")


def test_resume_keeps_the_map_bit_for_bit(bpe_bin, tmp_path):
    data = str(bpe_bin["folder"] / "train.bin")
    half = [*STEPS[:1], "20", *STEPS[2:]]
    base = ["--data", data, "--tokenizer", str(bpe_bin["json"]), "--out-dir", str(tmp_path), "--sample-tokens", "0"]
    assert run_cli("train.py", *base, "--compact-vocab", *half).returncode == 0
    r = run_cli("train.py", *base, "--resume", "--max-iters", "40")  # no flag: the checkpoint's config keeps it
    assert r.returncode == 0, r.stderr
    _assert_same(tmp_path, bpe_bin["run"])


def test_another_corpus_with_other_ids_is_refused(bpe_bin, tmp_path):
    other = tmp_path / "other.bin"
    other.write_bytes(bpe_bin["ids"][::-1].astype("<u2").tobytes()[: 2 * 20_000])
    r = run_cli("train.py", "--data", str(other), "--tokenizer", str(bpe_bin["json"]), "--resume",
                "--out-dir", str(bpe_bin["run"]), "--max-iters", "60")
    one_line(r, 2, "does not match")


def test_a_table_that_does_not_fit_names_the_compact_one(tmp_path):
    """The refusal comes after the data: and floor: lines, and says what the ids the corpus uses would need."""
    ids = (np.cumsum(np.random.default_rng(0).integers(1, 8, 50_000)) % 300).astype("<u2")
    (tmp_path / "ids.bin").write_bytes(ids.tobytes())
    r = run_cli("train.py", "--data", str(tmp_path / "ids.bin"), "--vocab-size", "400000",
                "--out-dir", str(tmp_path / "run"))
    one_line(r, 2, "needs about", "this corpus uses 300 of the 400,000 ids", "--compact-vocab")
    assert [x.split(":")[0] for x in r.stdout.splitlines()] == ["backend", "data", "floor"]
    assert not (tmp_path / "run").exists()


def test_compact_tokenizer_maps_both_ways():
    from bigram_jax.corpus.tokenizers import TokenIds

    tok = compact.CompactTokenizer(TokenIds(1000), np.array([3, 17, 999]))
    assert tok.vocab_size == 3 and tok.encode("999 3 17").tolist() == [2, 0, 1]
    assert tok.decode(np.array([1, 2])) == "17 999"
    with pytest.raises(UserError, match="token id 4 is not in this compact table"):
        tok.encode("3 4")
    again = compact.tokenizer_of(tok.record(), None, 3)
    assert again.ids.tolist() == [3, 17, 999] and again.base.vocab_size == 1000


@pytest.mark.parametrize("ids", [[3, 3, 5], [5, 3, 9], [-1, 2, 3], [1, 2, 1000], [1, 2], ["1", 2, 3]])
def test_a_malformed_map_is_one_line(ids):
    with pytest.raises(UserError, match="compact id map is malformed"):
        compact.tokenizer_of({"kind": "ids", "id_map": ids, "tokenizer_vocab_size": 1000}, None, 3)


def test_row_view_reads_rows_of_whatever_is_indexed():
    tokens = np.array([5, 9, 5, 7], np.uint16)
    rows = compact.row_map(np.array([5, 7, 9]), 10)
    view = compact.RowView(tokens, rows)
    assert len(view) == 4 and np.asarray(view, np.int32).tolist() == [0, 2, 0, 1]
    assert np.asarray(view[1:3]).tolist() == [2, 0] and view[np.array([[3, 0]])].tolist() == [[1, 0]]


def test_compact_counts_keep_every_transition():
    tokens = np.array([5, 9, 5, 7, 7, 9])
    full = PairCounts.of(tokens, 10)
    ids = compact.used_ids(full)
    small = compact.compact_counts(full, compact.row_map(ids, 10), len(ids))
    assert ids.tolist() == [5, 7, 9]
    want = PairCounts.of(np.searchsorted(ids, tokens), 3)
    np.testing.assert_array_equal(small.ids, want.ids)
    np.testing.assert_array_equal(small.n, want.n)


def test_other_ids_under_a_compact_table_are_named_on_resume(tmp_path):
    """The same number of ids, other ones: the rows would stand for other tokens; refused, and said so (with
    --allow-mismatch, said in the note)."""
    walk = np.cumsum(np.random.default_rng(0).integers(1, 5, 20_000)) % 40
    (walk * 3).astype("<u2").tofile(tmp_path / "a.bin")
    (walk * 3 + 1).astype("<u2").tofile(tmp_path / "b.bin")
    out = str(tmp_path / "run")
    fast = ["--max-iters", "20", "--eval-interval", "10", "--sample-tokens", "0"]
    assert run_cli("train.py", "--data", str(tmp_path / "a.bin"), "--compact-vocab", *fast, "--out-dir", out).returncode == 0
    again = ["--data", str(tmp_path / "b.bin"), "--resume", "--out-dir", out, "--max-iters", "30"]
    one_line(run_cli("train.py", *again), 2, "rows stand for other token ids")
    r = run_cli("train.py", *again, "--allow-mismatch")
    assert r.returncode == 0 and "rows stand for other token ids" in r.stdout, r.stderr


def test_a_compact_character_table_keeps_its_characters(tmp_path, shakespeare_path):
    """A compact table of a text's characters records the rows' characters as its `vocab` (plot.py labels its
    pictures with them), and reads back as the same characters."""
    from bigram_jax.checkpoint.load import load_checkpoint

    out = tmp_path / "run"
    assert run_cli("train.py", "--data", str(shakespeare_path), "--compact-vocab", "--max-iters", "10",
                   "--eval-interval", "10", "--sample-tokens", "0", "--out-dir", str(out)).returncode == 0
    ck = load_checkpoint(out)
    chars = sorted(set(shakespeare_path.read_text()))
    assert ck.vocab == "".join(chars) and ck.tokenizer.decode(np.arange(3)) == "".join(chars[:3])
    pytest.importorskip("matplotlib")
    r = run_cli("plot.py", "--run", str(out))
    assert r.returncode == 0, r.stderr


def test_the_hint_never_replaces_the_refusal(monkeypatch):
    """If the compact table's own plan fails too, the refusal of the whole table stands alone."""
    from bigram_jax.config import Config
    from bigram_jax.corpus.load import Corpus
    from bigram_jax.run import job

    def refuse(*a, **k):
        raise UserError("model_parallel 4 must divide the vocabulary size 513")

    counts = PairCounts.of(np.array([1, 5, 9, 5]), 100)
    corpus = Corpus(path=None, sha256="", tokenizer=None, vocab_size=100, train=np.zeros(4), val=np.zeros(4),
                    train_counts=counts, val_counts=counts)
    assert "3 of the 100 ids" in job._compact_hint(Config(), corpus)
    monkeypatch.setattr(job.parallel, "make_mesh", refuse)
    assert job._compact_hint(Config(), corpus) == ""


def test_model_parallel_that_does_not_split_a_compact_table_is_one_line(tmp_path):
    """--vocab-size pads the tokenizer's ids, not the compact table's rows: the line does not send you there."""
    (np.arange(20_000) % 40 * 3).astype("<u2").tofile(tmp_path / "a.bin")
    r = run_cli("train.py", "--data", str(tmp_path / "a.bin"), "--compact-vocab", "--model-parallel", "3",
                "--out-dir", str(tmp_path / "run"))
    one_line(r, 2, "model_parallel 3 must divide the vocabulary size 40", "a row for each id the corpus uses")
    assert "--vocab-size" not in r.stderr
