"""BPE tokenizers end to end: a tokenizer.json trained here with `tokenizers`, and an in-memory tiktoken encoding
(its merges learned here, found by name through a tiktoken_ext plugin); the extra absent or offline; the checkpoint
keeps the tokenizer whole. Nothing is downloaded."""
from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigram_jax import load_checkpoint
from bigram_jax.corpus.bpe import EXTRA
from bigram_jax.model import table_of
from tests.conftest import ROOT, _shakespeare, run_script
from tests.test_faults import one_line

tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")
regex = pytest.importorskip("regex")  # tiktoken's own dependency: the \p{L} classes of GPT-2's pattern

GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""  # r50k_base's
TK_NAME = "bjtest_shakes"  # the plugin's encoding: a name no real encoding has
ITERS = ["--max-iters", "100", "--eval-interval", "50"]


pytestmark = pytest.mark.usefixtures("own_cache")  # (conftest.py)


def _paragraphs(text: str) -> list[str]:
    """The text as documents, each ending in a blank line: so the BPEs learn '\\n\\n', as GPT-2's has (628)."""
    return [p + "\n\n" for p in text.split("\n\n")]


# the two tokenizers, built once per module -----------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_json(tmp_path_factory, shakespeare_text) -> Path:
    """A byte-level BPE tokenizer.json (vocab 500) trained on tinyshakespeare."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_paragraphs(shakespeare_text), trainer)
    path = tmp_path_factory.mktemp("hf") / "shakes-tokenizer.json"
    tok.save(str(path))
    return path


def learn_ranks(text: str, merges: int) -> dict[bytes, int]:
    """tiktoken mergeable ranks: the 256 bytes, then `merges` merges, each the most frequent adjacent pair over the
    words (GPT-2 pattern pieces) of `text`, counted incrementally."""
    words = collections.Counter(p for para in _paragraphs(text) for p in regex.findall(GPT2_PAT, para))
    seqs = [[bytes([b]) for b in w.encode()] for w in words]
    freq = list(words.values())
    ranks = {bytes([i]): i for i in range(256)}
    pairs: collections.Counter = collections.Counter()
    where = collections.defaultdict(set)
    for k, s in enumerate(seqs):
        for pair in zip(s, s[1:]):
            pairs[pair] += freq[k]
            where[pair].add(k)
    while len(ranks) < 256 + merges and pairs:
        (a, b), n = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if n <= 0:
            break
        del pairs[a, b]
        if a + b in ranks:  # two pairs that spell one token: rank it once
            continue
        ranks[a + b] = len(ranks)
        for k in where.pop((a, b)):
            s, out, i = seqs[k], [], 0
            for pair in zip(s, s[1:]):
                pairs[pair] -= freq[k]
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[k] = out
            for pair in zip(out, out[1:]):
                pairs[pair] += freq[k]
                where[pair].add(k)
        pairs.pop((a, b), None)
    return ranks


PLUGIN = '''
import base64, json, os

def _encoding():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ranks.json")) as f:
        tokens = json.load(f)
    return {{"name": {name!r}, "pat_str": {pat!r}, "special_tokens": {{}},
            "mergeable_ranks": {{base64.b64decode(t): i for i, t in enumerate(tokens)}}}}

ENCODING_CONSTRUCTORS = {{{name!r}: _encoding}}
'''


def write_plugin(folder: Path, ranks: dict[bytes, int]) -> Path:
    """A tiktoken plugin folder (for PYTHONPATH) whose encoding TK_NAME has `ranks`."""
    (folder / "tiktoken_ext").mkdir(parents=True)
    (folder / "tiktoken_ext" / f"{TK_NAME}.py").write_text(PLUGIN.format(name=TK_NAME, pat=GPT2_PAT))
    tokens = [base64.b64encode(t).decode() for t, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    (folder / "ranks.json").write_text(json.dumps(tokens))
    return folder


@pytest.fixture(scope="module")
def tk_ranks(shakespeare_text) -> dict[bytes, int]:
    ranks = learn_ranks(shakespeare_text, 300)
    assert len(ranks) == 556 and b"\n\n" in ranks and b" the" in ranks
    return ranks


@pytest.fixture(scope="module")
def tk_enc(tk_ranks):
    return tiktoken.Encoding(name=TK_NAME, pat_str=GPT2_PAT, mergeable_ranks=tk_ranks, special_tokens={})


@pytest.fixture(scope="module")
def plugin(tmp_path_factory, tk_ranks) -> Path:
    return write_plugin(tmp_path_factory.mktemp("plugin"), tk_ranks)


def _env(plugin: Path, cache: Path | None = None) -> dict:
    """A subprocess's environment: the repo and the plugin importable, the test's cache."""
    return {"PYTHONPATH": f"{ROOT}{os.pathsep}{plugin}",
            "XDG_CACHE_HOME": str(cache or os.environ["XDG_CACHE_HOME"])}


# one finished run per tokenizer ----------------------------------------------------------------------------

@dataclasses.dataclass
class BpeRun:
    kind: str  # "json" or "tiktoken"
    spec: str  # its --tokenizer
    shown: str  # how the data: line names it
    run: Path
    cache: Path  # the run's own cache: its token file
    stdout: str
    encode: object  # whole text -> ids, by tokenizers / tiktoken themselves


@pytest.fixture(scope="module", params=["json", "tiktoken"])
def bpe(request, tmp_path_factory, hf_json, tk_enc, plugin, shakespeare_path) -> BpeRun:
    """A 100-step run on tinyshakespeare read with the tokenizer.json, or the tiktoken encoding."""
    base = tmp_path_factory.mktemp(f"run-{request.param}")
    if request.param == "json":
        hf = tokenizers.Tokenizer.from_file(str(hf_json))
        spec, shown = str(hf_json), f"{hf_json} (Hugging Face tokenizers)"
        encode = lambda s: hf.encode(s, add_special_tokens=False).ids  # noqa: E731
    else:
        spec, shown, encode = TK_NAME, f"{TK_NAME} (tiktoken)", tk_enc.encode_ordinary
    r = run_script("train.py", "--data", str(shakespeare_path), "--tokenizer", spec, *ITERS, "--sample-tokens",
                   "100", "--out-dir", str(base / "run"), env=_env(plugin, base / "cache"))
    assert r.returncode == 0, r.stderr
    return BpeRun(request.param, spec, shown, base / "run", base / "cache", r.stdout, encode)


def _rows(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def _digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


# 3. trained, sampled and resumed end to end ----------------------------------------------------------------

def test_bpe_run_names_its_tokenizer_and_samples_text(bpe, plugin):
    data = next(line for line in bpe.stdout.splitlines() if line.startswith("data:"))
    assert f"tokenizer: {bpe.shown}" in data, data
    V = {"json": 500, "tiktoken": 556}[bpe.kind]
    assert f"vocab {V};" in data and max(_rows(bpe.run)) == 100
    summary = json.loads((bpe.run / "summary.json").read_text())
    assert summary["vocab_size"] == V and len(summary["sample"]) > 100, summary  # 100 tokens of text
    assert not all(w.isdigit() for w in summary["sample"].split())
    r = run_script("sample.py", "--checkpoint", str(bpe.run), "--num-tokens", "60", env=_env(plugin))
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert not all(w.isdigit() for w in r.stdout.split()), r.stdout  # text, not ids
    r = run_script("sample.py", "--checkpoint", str(bpe.run), "--prompt", "ROMEO:", "--num-tokens", "60",
                   env=_env(plugin))
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:") and len(r.stdout) > len("ROMEO:") + 30, r
    assert "Traceback" not in r.stderr


def test_bpe_run_resumes(bpe, plugin, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bpe.run, run)
    r = run_script("train.py", "--resume", "--out-dir", str(run), "--max-iters", "150", "--sample-tokens", "0",
                   env=_env(plugin))
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "step 150:" in r.stdout and "step 100:" not in r.stdout
    assert sorted(_rows(run)) == [0, 50, 100, 150] and f"tokenizer: {bpe.shown}" in r.stdout


@pytest.mark.parametrize("other", ["the other BPE", "chars", "same-size tokenizer.json"])
def test_resume_with_another_tokenizer_is_refused(bpe, other, plugin, hf_json, shakespeare_text, tmp_path):
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
    r = run_script("train.py", "--resume", "--out-dir", str(run), "--max-iters", "150", "--tokenizer", spec,
                   env=_env(plugin))
    one_line(r, 2, "tokenizer differs")
    assert _digest(run) == before


def test_bpe_exact_losses_equal_a_float64_brute_force(bpe, shakespeare_text):
    whole = np.asarray(bpe.encode(shakespeare_text), np.int64)
    # the run encoded the text line by line into its token file: for GPT-2's pattern, the whole text's ids
    files = list(bpe.cache.rglob("tokens-*.bin"))
    assert len(files) == 1, files
    ran = np.fromfile(files[0], "<u2").astype(np.int64)
    assert len(ran) == len(whole) and np.array_equal(ran, whole), "line-by-line ids differ from the whole text's"
    ck = load_checkpoint(bpe.run)
    assert ck.step == 100
    table = np.asarray(table_of(ck.params), np.float64)
    logp = table - table.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    n = int(0.9 * len(whole))
    brute = [-logp[s[:-1], s[1:]].mean() for s in (whole[:n], whole[n:])]
    last = _rows(bpe.run)[100]
    np.testing.assert_allclose([last["train_loss"], last["val_loss"]], brute, rtol=1e-5)
    assert brute[0] < _rows(bpe.run)[0]["train_loss"] - 0.3  # it learned: the check compares trained numbers


def test_line_by_line_encoding_equals_whole_text_on_awkward_lines(tmp_path, hf_json, tk_enc, shakespeare_text):
    """Most lines end in a blank line or in spaces or tabs (where a cut would change GPT-2's pieces: '\\n\\n' at the
    end of a piece is one token), some start with spaces, contractions or digits; one in 40 ends cleanly. Over
    many batch items, the cached ids equal an encoding of the whole text, for both GPT-2-pattern tokenizers."""
    from bigram_jax.corpus import bpe

    from bigram_jax.corpus import text_file
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

    from bigram_jax.corpus import bpe
    from bigram_jax.corpus import text_file
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


@pytest.mark.parametrize("bpe", ["tiktoken"], indirect=True)
def test_another_table_under_the_encodings_name_is_refused(bpe, tk_ranks, tmp_path):
    """A tiktoken checkpoint records its encoding's name and the digest of its BPE table: the same name with one
    merge fewer is not the tokenizer the run was trained with."""
    last = max(tk_ranks, key=tk_ranks.get)
    fewer = write_plugin(tmp_path / "fewer", {t: i for t, i in tk_ranks.items() if t != last})
    r = run_script("sample.py", "--checkpoint", str(bpe.run), "--num-tokens", "5", env=_env(fewer))
    one_line(r, 2, TK_NAME, "not the one the checkpoint was trained with")


# 4. offline, and optional ----------------------------------------------------------------------------------

def _python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()), "JAX_PLATFORMS": "cpu",
           **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


BLOCKED = "import sys\nsys.modules['tiktoken'] = None\nsys.modules['tokenizers'] = None\n"


@pytest.mark.parametrize("spec", ["gpt2", "x.json"])
def test_without_the_extra_a_bpe_tokenizer_says_how_to_install_it(spec, tmp_path, shakespeare_path):
    if spec.endswith(".json"):
        (tmp_path / spec).write_text("{}")
        spec = str(tmp_path / spec)
    args = ["--data", str(shakespeare_path), "--tokenizer", spec, "--max-iters", "5", "--out-dir", str(tmp_path / "o")]
    r = _python(BLOCKED + f"from bigram_jax.cli.train import train_main\nsys.exit(train_main({args!r}))")
    one_line(r, 2, EXTRA)
    assert not (tmp_path / "o").exists()


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


# 6. the checkpoint records the tokenizer completely ---------------------------------------------------------

def test_checkpoint_keeps_the_tokenizer_json_whole_under_its_checksum(hf_json, plugin, tmp_path, shakespeare_path):
    mine = tmp_path / "mine.json"
    shutil.copy(hf_json, mine)
    content = mine.read_text(encoding="utf-8")
    run = tmp_path / "run"
    r = run_script("train.py", "--data", str(shakespeare_path), "--tokenizer", str(mine), "--max-iters", "20",
                   "--eval-interval", "10", "--sample-tokens", "0", "--out-dir", str(run), env=_env(plugin))
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
    r = run_script("sample.py", "--checkpoint", str(run), "--prompt", "ROMEO:", "--num-tokens", "20",
                   env=_env(plugin))
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:"), r.stderr

    raw = metadata.read_text()
    at = raw.index("vocab", raw.index('"json"'))  # one character inside the recorded tokenizer.json
    metadata.write_text(raw[:at] + "V" + raw[at + 1:])
    r = run_script("sample.py", "--checkpoint", str(run), "--prompt", "ROMEO:", "--num-tokens", "20",
                   env=_env(plugin))
    one_line(r, 2, "checksum")


def test_export_writes_both_files_without_the_tokenizer_library(bpe, tmp_path):
    """export_torch.py copies the checkpoint's tokenizer record as it is: with tiktoken and tokenizers absent (or
    tiktoken's file not downloadable) both files are written, and nothing is half-written before a refusal."""
    pytest.importorskip("torch")
    out = tmp_path / "X.pt"
    code = ("import sys; sys.modules['tiktoken'] = sys.modules['tokenizers'] = None; "
            "from torch_ref.cli import export_main; "
            f"sys.exit(export_main(['--checkpoint', {str(bpe.run)!r}, '--out', {str(out)!r}]))")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "X.tokenizer.json").read_text())
    assert info["tokenizer"] == load_checkpoint(bpe.run).meta["tokenizer"] and out.is_file()
