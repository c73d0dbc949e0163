"""BPE tokenizers (bigram_jax/corpus/bpe.py): trained on, sampled, recorded whole; the extra absent or offline."""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import pytest

from bigram_jax import load_checkpoint
from bigram_jax.corpus.bpe import EXTRA
from bigram_jax.errors import UserError
from bigram_jax.model import table_of
from tests.conftest import (
    TK_NAME,
    _env,
    _paragraphs,
    _python,
    one_line,
    run_cli,
    run_script,
    write_plugin,
)
from tests.conftest import metric_rows as _rows

tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")
regex = pytest.importorskip("regex")  # tiktoken's own dependency: the \p{L} classes of GPT-2's pattern

pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.mark.e2e
def test_bpe_run_names_its_tokenizer_and_samples_text(bpe, plugin):
    data = next(line for line in bpe.stdout.splitlines() if line.startswith("data:"))
    assert f"tokenizer: {bpe.shown}" in data, data
    V = {"json": 500, "tiktoken": 556}[bpe.kind]
    assert f"vocab {V};" in data and max(_rows(bpe.run)) == 100
    summary = json.loads((bpe.run / "summary.json").read_text())
    assert summary["vocab_size"] == V and len(summary["sample"]) > 100, summary  # 100 tokens of text
    assert not all(w.isdigit() for w in summary["sample"].split())
    # the tokenizer.json's run samples in this process; the tiktoken encoding is a plugin's, found on PYTHONPATH
    # by tiktoken's registry (read once per process): a process of its own
    sample = run_cli if bpe.kind == "json" else functools.partial(run_script, env=_env(plugin))
    r = sample("sample.py", "--checkpoint", str(bpe.run), "--num-tokens", "60")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert not all(w.isdigit() for w in r.stdout.split()), r.stdout  # text, not ids
    r = sample("sample.py", "--checkpoint", str(bpe.run), "--prompt", "ROMEO:", "--num-tokens", "60")
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:") and len(r.stdout) > len("ROMEO:") + 30, r
    assert "Traceback" not in r.stderr


@pytest.mark.e2e
def test_bpe_exact_losses_equal_a_float64_brute_force(bpe, shakespeare_text):
    # nanoGPT's split: the first 90% of the characters and the rest, each encoded whole on its own; the run encoded
    # them in pieces into its token file, and holds the same ids
    k = int(0.9 * len(shakespeare_text))
    train, val = (np.asarray(bpe.encode(part), np.int64) for part in (shakespeare_text[:k], shakespeare_text[k:]))
    whole = np.concatenate([train, val])
    files = list(bpe.cache.rglob("tokens-*.bin"))
    assert len(files) == 1, files
    ran = np.fromfile(files[0], "<u2").astype(np.int64)
    assert len(ran) == len(whole) and np.array_equal(ran, whole), "the cached ids differ from the parts' own"
    ck = load_checkpoint(bpe.run)
    assert ck.step == 100
    table = np.asarray(table_of(ck.params), np.float64)
    logp = table - table.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    brute = [-logp[s[:-1], s[1:]].mean() for s in (train, val)]
    last = _rows(bpe.run)[100]
    np.testing.assert_allclose([last["train_loss"], last["val_loss"]], brute, rtol=1e-5)
    assert brute[0] < _rows(bpe.run)[0]["train_loss"] - 0.3  # it learned: the check compares trained numbers


def test_line_by_line_encoding_equals_whole_text_on_awkward_lines(tmp_path, hf_json, tk_enc, shakespeare_text):
    """Most lines end in a blank line or in spaces or tabs (where a cut would change GPT-2's pieces: '\\n\\n' at the
    end of a piece is one token), some start with spaces, contractions or digits; one in 40 ends cleanly. Over
    many batch items, the cached ids equal an encoding of the whole text, for both GPT-2-pattern tokenizers."""
    from bigram_jax.corpus import bpe, text_file
    rng = np.random.default_rng(0)
    starts = ["", "", "", " ", "  ", "\t", "'s ", "'tis ", "1600 ", "-- "]
    ends = ["\n\n", "\n\n", "  \n", "\t\n", " \n\n", "\n\n\n", "\n \n"]
    text = "".join(starts[rng.integers(len(starts))] + line + ("\n" if i % 40 == 0 else ends[rng.integers(len(ends))])
                   for i, line in enumerate(shakespeare_text.splitlines()[:12000]))
    assert len(text) > 5 * text_file.ITEM_CHARS
    path = tmp_path / "awkward.txt"
    path.write_text(text, encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(hf_json))
    for tok, whole in [(bpe.hugging_face(hf_json), hf.encode(text, add_special_tokens=False).ids),
                       (bpe.Tiktoken(TK_NAME, tk_enc), tk_enc.encode_ordinary(text))]:
        tf, _, _ = text_file.encode_to_cache(path, path.stat(), tok)
        assert np.array_equal(np.asarray(tf.tokens), np.asarray(whole)), tok.describe()


def test_a_tokenizer_json_that_adds_a_prefix_space_is_encoded_as_one_text_or_refused(tmp_path, shakespeare_path,
                                                                                   shakespeare_text):
    """ByteLevel(add_prefix_space=True), tokenizers' default: each separately encoded piece would gain a space.
    The token file must equal the whole text's encoding, or the tokenizer be refused in one line."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from bigram_jax.corpus import bpe, text_file
    from bigram_jax.errors import UserError

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_paragraphs(shakespeare_text[:200_000]), trainers.BpeTrainer(
        vocab_size=400, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path / "prefix-space.json"
    tok.save(str(path))
    try:
        tf, _, _ = text_file.encode_to_cache(shakespeare_path, shakespeare_path.stat(), bpe.hugging_face(path))
    except UserError as e:
        assert "\n" not in str(e)
        return
    ids = np.asarray(tf.tokens)
    whole = np.asarray(tok.encode(shakespeare_text, add_special_tokens=False).ids)
    assert len(ids) == len(whole) and np.array_equal(ids, whole), f"{len(ids)} ids vs {len(whole)}"


@pytest.mark.e2e
@pytest.mark.parametrize("bpe", ["tiktoken"], indirect=True)
def test_another_table_under_the_encodings_name_is_refused(bpe, tk_ranks, tmp_path):
    """A tiktoken checkpoint records its encoding's name and the digest of its BPE table: the same name with one
    merge fewer is not the tokenizer the run was trained with. (A process of its own: tiktoken finds a plugin's
    encodings once per process.)"""
    last = max(tk_ranks, key=tk_ranks.get)
    fewer = write_plugin(tmp_path / "fewer", {t: i for t, i in tk_ranks.items() if t != last})
    r = run_script("sample.py", "--checkpoint", str(bpe.run), "--num-tokens", "5", env=_env(fewer))
    one_line(r, 2, TK_NAME, "not the one the checkpoint was trained with")


BLOCKED = "import sys\nsys.modules['tiktoken'] = None\nsys.modules['tokenizers'] = None\n"


@pytest.mark.parametrize("spec", ["gpt2", "x.json"])
def test_without_the_extra_a_bpe_tokenizer_says_how_to_install_it(spec, tmp_path, shakespeare_path, monkeypatch):
    if spec.endswith(".json"):
        (tmp_path / spec).write_text("{}")
        spec = str(tmp_path / spec)
    for name in ("tiktoken", "tokenizers"):  # as BLOCKED does: `import` of either fails, loaded or not
        monkeypatch.setitem(sys.modules, name, None)
    r = run_cli("train.py", "--data", str(shakespeare_path), "--tokenizer", spec, "--max-iters", "5", "--out-dir",
                str(tmp_path / "o"))
    one_line(r, 2, EXTRA)
    assert not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_gpt2_offline_with_an_empty_tiktoken_cache_is_one_line(tmp_path, shakespeare_path):
    empty = tmp_path / "tiktoken-cache"
    empty.mkdir()
    dead = "http://127.0.0.1:9"  # nothing listens: a download fails at once instead of waiting
    r = run_script("train.py", "--data", str(shakespeare_path), "--tokenizer", "gpt2", "--max-iters", "5",
                   "--out-dir", str(tmp_path / "o"), timeout=60,
                   env={"TIKTOKEN_CACHE_DIR": str(empty), "HTTPS_PROXY": dead, "HTTP_PROXY": dead,
                        "https_proxy": dead, "http_proxy": dead, "NO_PROXY": "", "no_proxy": ""})
    one_line(r, 2, "gpt2", "TIKTOKEN_CACHE_DIR")
    assert list(empty.iterdir()) == [] and not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_help_imports_no_tokenizer_library():
    code = """import sys
from bigram_jax.cli.train import train_main
from bigram_jax.cli.sample import sample_main
for main in (train_main, sample_main):
    try:
        main(['--help'])
    except SystemExit as e:
        assert e.code in (0, None), e.code
print('LOADED', sorted(m for m in ('tiktoken', 'tokenizers') if sys.modules.get(m) is not None))
"""
    r = _python(code)
    assert r.returncode == 0 and "--tokenizer" in r.stdout and "LOADED []" in r.stdout, (r.stdout[-300:], r.stderr)
    r = _python(BLOCKED + code)  # and it works with neither installed
    assert r.returncode == 0 and "LOADED []" in r.stdout, r.stderr


def test_checkpoint_keeps_the_tokenizer_json_whole_under_its_checksum(hf_json, tmp_path, shakespeare_path):
    mine = tmp_path / "mine.json"
    shutil.copy(hf_json, mine)
    content = mine.read_text(encoding="utf-8")
    run = tmp_path / "run"
    r = run_cli("train.py", "--data", str(shakespeare_path), "--tokenizer", str(mine), "--max-iters", "20",
                "--eval-interval", "10", "--sample-tokens", "0", "--out-dir", str(run))
    assert r.returncode == 0, r.stderr
    step = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    metadata = run / "checkpoints" / str(step) / "meta" / "metadata"
    record = json.loads(metadata.read_text())["tokenizer"]
    assert record["kind"] == "tokenizer.json" and record["json"] == content
    assert record["identity"] == hashlib.sha256(content.encode()).hexdigest()

    mine.unlink()  # the checkpoint alone decodes
    tok = load_checkpoint(run).tokenizer
    original = tokenizers.Tokenizer.from_file(str(hf_json))
    line = "ROMEO:\nO, she doth teach the torches to burn bright!"
    assert tok.encode(line).tolist() == original.encode(line, add_special_tokens=False).ids
    assert tok.decode(tok.encode(line)) == line
    r = run_cli("sample.py", "--checkpoint", str(run), "--prompt", "ROMEO:", "--num-tokens", "20")
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:"), r.stderr

    raw = metadata.read_text()
    at = raw.index("vocab", raw.index('"json"'))  # one character inside the recorded tokenizer.json
    metadata.write_text(raw[:at] + "V" + raw[at + 1:])
    r = run_cli("sample.py", "--checkpoint", str(run), "--prompt", "ROMEO:", "--num-tokens", "20")
    one_line(r, 2, "checksum")


def test_tiktoken_ids_with_no_bytes_decode_as_replacement_characters():
    """cl100k_base and o200k_base leave some ids without bytes, and a table samples them: U+FFFD, not a crash."""
    tiktoken = pytest.importorskip("tiktoken")
    from bigram_jax.corpus.bpe import Tiktoken
    from bigram_jax.corpus.tokenizers import show

    enc = tiktoken.Encoding(name="gaps", pat_str=r"\S+|\s+", mergeable_ranks={bytes([b]): b for b in range(256)},
                            special_tokens={"<|end|>": 300})  # ids 256..299 have no bytes
    tok = Tiktoken("gaps", enc)
    assert tok.vocab_size == 301
    assert tok.decode([65, 260, 66]) == "A\ufffdB"
    assert show(tok, np.array([65, 299, 300, 66])) == "A\ufffd<|end|>B"


def _fake_r50k(folder, monkeypatch) -> bytes:
    """A small .tiktoken file where tiktoken's cache keeps r50k_base's (sha1 of its URL, in TIKTOKEN_CACHE_DIR),
    taken for the real one (its digest in place of tiktoken's expected hash)."""
    from bigram_jax.corpus import bpe

    raw = b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(
        [bytes([b]) for b in range(256)] + [b"he", b"hel", b"hell", b"hello"]))
    folder.mkdir(exist_ok=True)
    (folder / hashlib.sha1(bpe._R50K_FILE.encode()).hexdigest()).write_bytes(raw)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(folder))
    monkeypatch.setattr(bpe, "_R50K_SHA256", hashlib.sha256(raw).hexdigest())
    return raw


def test_gpt2_offline_uses_r50k_bases_cached_file(tmp_path, monkeypatch, capsys):
    """Issue 27 item 5: gpt2's own files not cached, r50k_base's is (digest checked): gpt2 is built from it with no
    download (get_encoding is never asked), and the run says so. Another digest: not used."""
    from bigram_jax.corpus import bpe

    _fake_r50k(tmp_path / "tk", monkeypatch)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: pytest.fail("tried tiktoken's download path"))
    tok = bpe.tiktoken_named("gpt2")
    assert tok.name == tok.enc.name == "gpt2" and tok.enc._pat_str == bpe._R50K_PAT
    assert tok.enc.eot_token == 50256 and tok.encode("hello hello").tolist() == [259, 32, 259]
    assert "using r50k_base's" in capsys.readouterr().err
    monkeypatch.setattr(bpe, "_R50K_SHA256", "0" * 64)  # not tiktoken's file: left alone
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(UserError, match="tiktoken cannot load 'gpt2'"):
        bpe.tiktoken_named("gpt2")


def test_gpt2_offline_message_is_whole_and_names_r50k_base(tmp_path, monkeypatch):
    """Nothing cached, no network: the library's long message is cut at a word, never mid-word, and the line
    says r50k_base's file serves too."""
    from bigram_jax.corpus import bpe

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    long = "HTTPSConnectionPool(host='openaipublic.blob.core.windows.net', port=443): Max retries exceeded with " \
           "url: /gpt-2/encodings/main/vocab.bpe (Caused by NameResolutionError(\"Failed to resolve\"))"
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: (_ for _ in ()).throw(ConnectionError(long)))
    with pytest.raises(UserError) as e:
        bpe.tiktoken_named("gpt2")
    msg = str(e.value)
    assert "\n" not in msg and "r50k_base" in msg and msg.endswith("r50k_base's file serves too: the same encoding)")
    shown = msg[msg.index("(ConnectionError: ") + 18:msg.index(" ...)")]
    assert long.startswith(shown) and long[len(shown)] == " "  # cut between words


def test_a_tokenizer_json_fifo_or_oversized_file_is_one_line(tmp_path):
    """bpe.hugging_face (--tokenizer X.json, and the X.tokenizer.json beside exported ids) reads through the checked
    open: a FIFO is refused at once, and a file over TOKENIZER_JSON_MAX before a byte is read (it used to be read
    whole, however large)."""
    from bigram_jax.corpus import bpe
    from tests.store.test_files import _unblocked

    fifo = tmp_path / "fifo.tokenizer.json"
    os.mkfifo(fifo)
    with _unblocked(fifo), pytest.raises(UserError, match="tokenizer file .* is not a regular file"):
        bpe.hugging_face(fifo)
    big = tmp_path / "big.tokenizer.json"
    with open(big, "wb") as f:
        f.truncate(bpe.TOKENIZER_JSON_MAX + 1)  # sparse: no disk, and no read if refused by its size
    with pytest.raises(UserError, match=r"tokenizer file .* over the 256 MB such a file can be"):
        bpe.hugging_face(big)
