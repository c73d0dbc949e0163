"""The tokenizer beside a .pt (torch_ref/beside.py): export -> import round trips with text out, the ecosystem's
own files (meta.pkl, tokenizer.json, a compact map as a LongTensor), mismatches and bad records in one line."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export and import need PyTorch (pip install -e '.[torch]')")

from bigram_jax import load_checkpoint  # noqa: E402
from bigram_jax.errors import UserError  # noqa: E402
from tests.conftest import ROOT, ok, one_line, run_cli  # noqa: E402
from torch_ref import beside  # noqa: E402

pytestmark = pytest.mark.usefixtures("own_cache")


def _round_trip(tmp_path, checkpoint, *import_args: str) -> tuple[dict, dict, str]:
    """Export `checkpoint`, import the .pt with `import_args` (no tokenizer flag unless given), sample the import:
    (the exported checkpoint's meta, the imported one's, the sample's text)."""
    pt = tmp_path / "X.pt"
    ok(run_cli("export_torch.py", "--checkpoint", str(checkpoint), "--out", str(pt)))
    ok(run_cli("import_torch.py", "--state-dict", str(pt), *import_args, "--out-dir", str(tmp_path / "back")))
    text = ok(run_cli("sample.py", "--checkpoint", str(tmp_path / "back"), "--num-tokens", "200")).stdout
    return load_checkpoint(checkpoint).meta, load_checkpoint(tmp_path / "back").meta, text


def _same_losses(a: dict, b: dict) -> None:
    """The same table over the same ids: the same exact losses (the import computes them afresh)."""
    for k in ("train_loss", "val_loss"):
        assert b[k] == pytest.approx(a[k], rel=1e-6), (k, a[k], b[k])


def test_a_character_run_round_trips(tmp_path, run, shakespeare_path):
    """The lecture's characters: X.meta.pkl (nanoGPT's form of the table) beside the .pt; import with no flag."""
    was, back, text = _round_trip(tmp_path, run, "--data", str(shakespeare_path))
    _same_losses(was, back)
    assert back["tokenizer"] == was["tokenizer"] and set(text) <= set(was["vocab"]) and len(text) > 150
    meta = pickle.loads((tmp_path / "X.meta.pkl").read_bytes())
    assert meta["vocab_size"] == 65 and "".join(meta["itos"][i] for i in range(65)) == was["vocab"]


def test_a_table_of_another_character_order_imports_under_its_own(tmp_path, shakespeare_text, shakespeare_path):
    """Issue 28 item 5: a nanoGPT folder whose meta.pkl orders the characters backwards; its table imported with a
    text --data is read with that table (before: under the text's sorted characters, val loss 6.5 for 2.5, exit
    0). Another tokenizer named with --tokenizer is one line."""
    folder = tmp_path / "rev"
    chars = sorted(set(shakespeare_text))[::-1]
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in shakespeare_text], "<u2")
    folder.mkdir()
    n = int(0.9 * len(ids))
    ids[:n].tofile(folder / "train.bin")
    ids[n:].tofile(folder / "val.bin")
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 65, "itos": dict(enumerate(chars)), "stoi": stoi}))
    ok(run_cli("train.py", "--data", str(folder / "train.bin"), "--val-data", str(folder / "val.bin"), "--max-iters",
               "200", "--eval-interval", "100", "--sample-tokens", "0", "--out-dir", str(tmp_path / "run")))
    was, back, text = _round_trip(tmp_path, tmp_path / "run", "--data", str(shakespeare_path))
    _same_losses(was, back)
    assert back["tokenizer"]["vocab"] == "".join(chars) and set(text) <= set(chars)
    r = run_cli("import_torch.py", "--state-dict", str(tmp_path / "X.pt"), "--data", str(shakespeare_path),
                "--tokenizer", "chars", "--out-dir", str(tmp_path / "other"))
    one_line(r, 2, "ids would mean other tokens", "leave out --tokenizer")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("bpe", ["json"], indirect=True)
def test_a_tokenizer_json_run_round_trips(bpe, hf_json, tmp_path, shakespeare_path, shakespeare_text):
    """Issue 27 item 6: X.tokenizer.json is the tokenizer itself (Tokenizer.from_file reads it and encodes as the
    run's did); import finds it with no flag (before: 'vocabulary size 500, expected 65')."""
    from tokenizers import Tokenizer

    was, back, text = _round_trip(tmp_path, bpe.run, "--data", str(shakespeare_path))
    _same_losses(was, back)
    exported = Tokenizer.from_file(str(tmp_path / "X.tokenizer.json"))
    piece = shakespeare_text[:2000]
    assert exported.encode(piece, add_special_tokens=False).ids == bpe.encode(piece)
    assert (tmp_path / "X.tokenizer.json").read_bytes() == hf_json.read_bytes()
    assert back["tokenizer"]["identity"] == was["tokenizer"]["identity"] and len(text.strip()) > 100


def test_another_text_under_a_character_table_is_one_line(tmp_path, run):
    """The lecture's characters of tinyshakespeare, imported over a text with other characters: refused in one
    line that says how to read that text with the table's characters; nothing is written."""
    pt = tmp_path / "X.pt"
    ok(run_cli("export_torch.py", "--checkpoint", str(run), "--out", str(pt)))
    r = run_cli("import_torch.py", "--state-dict", str(pt), "--data", str(ROOT / "tests" / "fixtures" / "tiny.txt"),
                "--out-dir", str(tmp_path / "o"))
    one_line(r, 2, "ids would mean other tokens", f"--tokenizer {tmp_path / 'X.meta.pkl'}")
    assert not (tmp_path / "o").exists()


def test_an_older_export_is_read(tmp_path, run, shakespeare_path):
    """The single X.tokenizer.json wrapper that exports before this one wrote is still the table's tokenizer."""
    pt = tmp_path / "X.pt"
    ok(run_cli("export_torch.py", "--checkpoint", str(run), "--out", str(pt)))
    (tmp_path / "X.meta.pkl").unlink()
    record = tmp_path / "X.bigram_jax.json"
    info = json.loads(record.read_text())
    record.unlink()
    (tmp_path / "X.tokenizer.json").write_text(json.dumps({"vocab_size": 65, "tokenizer": info["tokenizer"]}))
    ok(run_cli("import_torch.py", "--state-dict", str(pt), "--data", str(shakespeare_path), "--out-dir",
               str(tmp_path / "o")))
    assert load_checkpoint(tmp_path / "o").vocab == load_checkpoint(run).vocab


def test_a_compact_map_is_carried_and_written_as_a_long_tensor(tmp_path):
    """A compact table's record (its base tokenizer's plus the id map): the record beside keeps it whole, the map is
    also X.id_map.pt (token_id = ids[row]), the ecosystem file is the base tokenizer's, and import asks for the
    compact table over the same ids."""
    record = {"kind": "chars", "vocab": "abcdef", "source": "", "id_map": [0, 2, 5], "tokenizer_vocab_size": 6}
    pt = tmp_path / "X.pt"
    files = beside.contents(record, 3)
    assert list(files)[-1] == beside.RECORD  # the record last: where it is, the rest is complete
    beside.write(pt, files, written := [])
    assert sorted(p.name for p in written) == ["X.bigram_jax.json", "X.id_map.pt", "X.meta.pkl"]
    ids = torch.load(tmp_path / "X.id_map.pt", weights_only=True)
    assert ids.dtype == torch.long and ids.tolist() == [0, 2, 5]
    assert pickle.loads((tmp_path / "X.meta.pkl").read_bytes())["vocab_size"] == 6
    found = beside.read(pt)
    assert found.record == record and found.id_map == [0, 2, 5] and found.vocab_size == 3
    assert found.base == {"kind": "chars", "vocab": "abcdef", "source": ""}
    assert found.overrides(True, "auto") == {"compact_vocab": True}
    with pytest.raises(UserError, match="exists"):
        beside.check_free(pt)


def test_a_compact_run_round_trips(tmp_path):
    """--compact-vocab (40 of 118 ids used): the .pt holds the 40x40 table, X.id_map.pt its ids, the import maps
    them back with no flag; token-id data using other ids is one line."""
    ids = (np.cumsum(np.random.default_rng(0).integers(1, 5, 50_000)) % 40) * 3  # ids 0, 3, ..., 117
    ids.astype("<u2").tofile(tmp_path / "d.bin")
    ok(run_cli("train.py", "--data", str(tmp_path / "d.bin"), "--compact-vocab", "--max-iters", "50",
               "--eval-interval", "25", "--sample-tokens", "0", "--out-dir", str(tmp_path / "run")))
    was, back, text = _round_trip(tmp_path, tmp_path / "run", "--data", str(tmp_path / "d.bin"))
    _same_losses(was, back)
    assert torch.load(tmp_path / "X.id_map.pt", weights_only=True).tolist() == list(range(0, 118, 3))
    assert back["tokenizer"]["id_map"] == was["tokenizer"]["id_map"] and back["vocab_size"] == 40
    assert {int(t) % 3 for t in text.split()} == {0}  # sampled rows shown as the tokenizer's ids
    (ids + 1).astype("<u2").tofile(tmp_path / "other.bin")
    r = run_cli("import_torch.py", "--state-dict", str(tmp_path / "X.pt"), "--data", str(tmp_path / "other.bin"),
                "--out-dir", str(tmp_path / "o"))
    one_line(r, 2, "compact table of 40 ids", "other ones")


@pytest.mark.parametrize("what", ["not JSON", "nested deep", "not ours", "no vocab_size", "unknown kind",
                                  "short id map", "directory"])
def test_a_bad_record_beside_is_one_line(what, tmp_path, run):
    """What import finds beside the .pt is checked: each of these is one line, before the corpus is read."""
    pt = tmp_path / "X.pt"
    ok(run_cli("export_torch.py", "--checkpoint", str(run), "--out", str(pt)))
    record = tmp_path / "X.bigram_jax.json"
    info = json.loads(record.read_text())
    record.unlink()
    bad = {"not JSON": "{", "nested deep": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
           "not ours": json.dumps({"vocab_size": 65}),
           "no vocab_size": json.dumps({**info, "vocab_size": "65"}),
           "unknown kind": json.dumps({**info, "tokenizer": {"kind": "sentencepiece"}}),
           "short id map": json.dumps({**info, "tokenizer": {**info["tokenizer"], "id_map": [1, 2]}})}
    if what == "directory":
        record.mkdir()
    else:
        record.write_text(bad[what])
    r = run_cli("import_torch.py", "--state-dict", str(pt), "--out-dir", str(tmp_path / "o"))
    one_line(r, 2, "X.bigram_jax.json")
    assert not (tmp_path / "o").exists()


def test_a_meta_device_table_is_one_line(tmp_path):
    """Issue 28 item 8: a meta-device tensor (a shape, no values) raised RuntimeError from .item() (a traceback)."""
    pt = tmp_path / "meta.pt"
    torch.save({"token_embedding_table.weight": torch.empty(65, 65, device="meta")}, pt)
    one_line(run_cli("import_torch.py", "--state-dict", str(pt), "--out-dir", str(tmp_path / "o")), 2,
             "meta-device tensor")
