"""Shared fixtures and helpers: the real tinyshakespeare corpus, key-reuse checking, the commands run in
subprocesses and what their output is checked with, and the finished runs and BPE tokenizers that test files
of several folders read (session-scoped where deterministic and read-only for their users)."""
from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import importlib.util
import json
import os
import pickle
import platform
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
jax.config.update("jax_debug_key_reuse", True)  # a reused PRNG key fails the test


def _shakespeare() -> Path:
    """$BIGRAM_JAX_DATA, else the verified copy beside the repo (CI), else the library's cache/download."""
    env = os.environ.get("BIGRAM_JAX_DATA")
    shared = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
    if env or shared.is_file():
        return Path(env) if env else shared
    from bigram_jax.corpus.files import resolve_corpus

    return resolve_corpus("tinyshakespeare")


os.environ.setdefault("BIGRAM_JAX_DATA", str(_shakespeare()))  # in-process CLI runs resolve the corpus too


HAVE_TORCH = importlib.util.find_spec("torch") is not None
# the newest stack may go without torch (its only build there is CUDA's, several GB): then the reference's tests and
# those marked `torch` are left out, and the run's last lines say so once
collect_ignore_glob = [] if HAVE_TORCH else ["torch_ref/*"]


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if HAVE_TORCH:
        return
    dropped = [item for item in items if item.get_closest_marker("torch")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("torch")]
    config.stash[_DROPPED] = len(dropped)


_DROPPED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The stack the suite ran on, in one line (and, without torch, what did not run, in one more)."""
    from importlib import metadata

    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    terminalreporter.write_line(f"stack: Python {platform.python_version()}, {', '.join(found)}")
    if not HAVE_TORCH:
        terminalreporter.write_line(f"torch is not installed: tests/torch_ref/ and {config.stash.get(_DROPPED, 0)} "
                                    "tests marked torch did not run (pip install -e '.[dev]' runs them)")


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """This test's own library cache, in-process and (through os.environ) in its subprocesses: what one test
    caches never helps another. Files of tests that must not share one use it for every test (`pytestmark`)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    """Path of tinyshakespeare; the tests need the real corpus."""
    p = _shakespeare()
    if not p.is_file():
        pytest.fail(f"tinyshakespeare not found at {p}: set BIGRAM_JAX_DATA")
    return p


@pytest.fixture(scope="session")
def shakespeare_text(shakespeare_path: Path) -> str:
    """The corpus text."""
    return shakespeare_path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def shakespeare(shakespeare_text: str) -> tuple:
    """(its character tokenizer, train ids, val ids): the lecture's corpus and split."""
    from bigram_jax.corpus.tokenizers import CharTokenizer
    from bigram_jax.data import split

    tok = CharTokenizer.from_text(shakespeare_text)
    return tok, *split(tok.encode(shakespeare_text))


def run_script(script: str, *args: str, timeout: float = 300, env: dict | None = None,
               **kw) -> subprocess.CompletedProcess:
    """Run scripts/<script> in a subprocess with the repo importable (plus `env`); capture text output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()),
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


_MAINS = {"train.py": ("bigram_jax.cli.train", "train_main"), "sample.py": ("bigram_jax.cli.sample", "sample_main"),
          "plot.py": ("bigram_jax.cli.plot", "plot_main"), "synth_tokens.py": ("bigram_jax.cli.synth", "synth_main"),
          "export_torch.py": ("torch_ref.cli", "export_main"), "import_torch.py": ("torch_ref.cli", "import_main")}


def run_cli(script: str, *args: str, env: dict | None = None, cwd: str | Path | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess:
    """scripts/<script> run in this process through its entry point: the exit status, stdout and stderr that
    run_script gives, without a new interpreter and JAX start (this process's compiled programs serve again).
    For tests of what a command does; a test of the process itself (signals, start-up, a cold cache, XLA's
    cache, settings read once at import) keeps run_script. `env` (None removes a variable) and `cwd` hold for the
    call; `timeout` is accepted for run_script's signature and not enforced here."""
    import contextlib
    import importlib
    import io
    from unittest import mock

    module, name = _MAINS[script]
    main = getattr(importlib.import_module(module), name)
    out, err = io.StringIO(), io.StringIO()
    over = {"BIGRAM_JAX_DATA": str(_shakespeare()), **(env or {})}
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        os.environ.update({k: v for k, v in over.items() if v is not None})
        for k in (k for k, v in over.items() if v is None):
            os.environ.pop(k, None)
        if cwd is not None:
            os.chdir(cwd)
        # XLA's persistent cache is the process's, set once: an in-process run leaves it as the tests have it
        with mock.patch("bigram_jax.cli.train._compile_cache", lambda: None), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(args))
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([script, *args], rc, out.getvalue(), err.getvalue())


def popen_script(script: str, *args: str) -> subprocess.Popen:
    """Start scripts/<script> in the background (for signal tests)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()), "JAX_PLATFORMS": "cpu",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def one_line(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """The process failed with `code` and said so in one line holding `words`, with no traceback."""
    err = r.stderr.strip()
    assert r.returncode == code and len(err.splitlines()) == 1 and "Traceback" not in err, (r.returncode, err)
    assert all(w in err for w in words), err


def env_of(**over: str | None) -> dict:
    """The environment of a child process, with `over` on top (None removes a variable)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()), "JAX_PLATFORMS": "cpu",
           "PYTHONUNBUFFERED": "1", **over}
    return {k: v for k, v in env.items() if v is not None}


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`r`, which must have succeeded."""
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    return r


def train(out: Path, *args: str, cache: Path | None = None, **kw) -> subprocess.CompletedProcess:
    """scripts/train.py into `out` (with the cache `cache`, else the test's own)."""
    return run_script("train.py", "--out-dir", str(out), *args, env={"XDG_CACHE_HOME": str(cache)} if cache else None,
                      **kw)


def said(r: subprocess.CompletedProcess, *prefixes: str) -> list[str]:
    """The lines of r's stdout that start with one of `prefixes`."""
    return [line for line in r.stdout.splitlines() if line.startswith(prefixes)]


def losses(out: Path) -> list[tuple]:
    """(step, exact train loss, exact val loss) of every row of a run's metrics.jsonl."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in rows]


def rewrite_keeping_times(path: Path, data: bytes) -> None:
    """Overwrite `path` in place with `data` (the same size), then put back its access and modification times."""
    st = path.stat()
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def write_ids(path: Path, top: int, seed: int, n: int = 200_000) -> None:
    """`n` random uint16 token ids in [0, top], each of 0 and `top` at least once."""
    ids = np.random.default_rng(seed).integers(0, top + 1, n).astype("<u2")
    ids[:2] = (0, top)
    path.write_bytes(ids.tobytes())


def steps(out: Path) -> list[int]:
    """The checkpoint steps a run folder holds."""
    return sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())


def wait_for(p: subprocess.Popen, text: str, seconds: float = 120) -> None:
    """Read p's stdout until a line starts with `text`."""
    deadline = time.time() + seconds
    for line in p.stdout:
        if line.startswith(text) or time.time() > deadline:
            return
    pytest.fail(f"the run ended before printing {text!r}: {p.wait()} {p.stderr.read()[-2000:]}")


def _walk(n: int, V: int, seed: int = 0) -> np.ndarray:
    """A token stream with bigram structure (steps 1..7 mod V)."""
    return np.cumsum(np.random.default_rng(seed).integers(1, 8, n)) % V


def devices_env(n: int) -> dict:
    """The environment variable that gives a process `n` host CPU devices."""
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}


def train_on_devices(out: Path, *args: str, devices: int = 1) -> tuple[dict, list[dict], str]:
    """Run train.py; (summary, metrics rows, stdout)."""
    r = run_script("train.py", "--out-dir", str(out), *args, env=devices_env(devices))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), rows, r.stdout


def assert_same_losses(a: list[dict], b: list[dict], tol: float) -> None:
    """Same eval steps, exact train and val losses within `tol`."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "val_loss"):
            assert abs(ra[k] - rb[k]) <= tol, (ra["step"], k, ra[k], rb[k])


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(out: Path, *args: str, stop_after: float | None = None) -> list[subprocess.CompletedProcess]:
    """train.py as 2 processes of 2 CPU devices each, joined through a coordinator on localhost.

    With `stop_after`, process 1 alone gets a SIGTERM that many seconds after process 0 logged step 0.
    """
    port = free_port()
    env = {**os.environ, **devices_env(2), "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()),
           "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), "--out-dir", str(out), *args,
                               "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    try:
        if stop_after is not None:
            metrics, t0 = out / "metrics.jsonl", time.monotonic()
            while not (metrics.exists() and metrics.read_text()) and time.monotonic() - t0 < 120:
                time.sleep(0.1)
            time.sleep(stop_after)
            procs[1].send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=240) for p in procs]
        return [subprocess.CompletedProcess(p.args, p.returncode, *o) for p, o in zip(procs, outputs)]
    finally:
        for p in procs:
            p.kill()


def _leaves(state) -> list[np.ndarray]:
    """Every leaf as numpy, typed keys as their raw data, for bit comparisons."""
    f = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    return [np.asarray(f(x)) for x in jax.tree.leaves(state)]


def _final_state(out: Path, step: int | None = None):
    """The full train state of a run's checkpoint, restored through the library."""
    from bigram_jax.checkpoint import manager as ckpt
    from bigram_jax.config import Config
    from bigram_jax.train import init_state

    with ckpt.Checkpoints(ckpt.checkpoint_dir(out), read_only=True) as ckpts:
        step = ckpts.pick(step)
        meta = ckpts.read_meta(step)
        cfg = Config(**meta["config"])
        abstract = jax.eval_shape(lambda: init_state(cfg, meta["vocab_size"]))
        return ckpts.restore_state(step, abstract, meta), meta


# XLA's arithmetic changes between JAX versions: a state is bit-identical on the stack that wrote it, and within
# this of it on another (measured: under 1e-5 after 30 steps between jax 0.10.2 and 0.12.1, CPU)
ACROSS_STACKS = 2e-5


def written_here(run: Path) -> bool:
    """Whether the jax and jaxlib that wrote `run`'s newest checkpoint are the ones running now."""
    from importlib import metadata

    newest = max((run / "checkpoints").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    versions = json.loads((newest / "meta" / "metadata").read_text()).get("versions", {})
    return all(versions.get(n) == metadata.version(n) for n in ("jax", "jaxlib"))


def _assert_same(a: Path, b: Path, exact: bool = True) -> None:
    """Two runs ended in the same state and logged the same exact losses: bit-identical (`exact`, one stack), or
    within ACROSS_STACKS (a run begun on another stack)."""
    (sa, _), (sb, _) = _final_state(a), _final_state(b)
    assert int(sa.step) == int(sb.step)
    for x, y in zip(_leaves(sa), _leaves(sb), strict=True):
        if exact or not np.issubdtype(np.asarray(x).dtype, np.floating):
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=0, atol=ACROSS_STACKS)
    rows = lambda d: {r["step"]: (r["train_loss"], r["val_loss"])  # noqa: E731
                      for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())}
    ra, rb = rows(a), rows(b)
    assert sorted(ra) == sorted(rb) and max(ra) == int(sa.step)
    if exact:
        assert ra == rb
    else:
        np.testing.assert_allclose(np.array([ra[s] for s in sorted(ra)]), np.array([rb[s] for s in sorted(rb)]),
                                   rtol=0, atol=ACROSS_STACKS)


def _digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> Path:
    """A finished run with checkpoints at 100, 200 and 300, in a cache of its own. Shared by the session: its users
    read it, or copy it before they change anything."""
    base = tmp_path_factory.mktemp("trust")
    out = base / "run"
    ok(train(out, "--max-iters", "300", "--checkpoint-every", "100", "--sample-tokens", "0", "--eval-interval", "100",
             cache=base / "cache"))
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A finished 600-step run with checkpoints at 300 and 600. Shared by the session: its users read it, or copy it
    before they change anything."""
    out = tmp_path_factory.mktemp("trained") / "run"
    r = run_cli("train.py", "--max-iters", "600", "--checkpoint-every", "300", "--out-dir", str(out),
                "--sample-tokens", "0")
    assert r.returncode == 0, r.stderr
    return out


SAME = ["--max-iters", "300", "--eval-interval", "100", "--sample-tokens", "200"]


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


@pytest.fixture(scope="session")
def pair(tmp_path_factory, shakespeare_path, shakespeare_text) -> dict:
    """The text run and the nanoGPT-folder run, same flags, each with its own cache (read-only for its users)."""
    base = tmp_path_factory.mktemp("nanogpt")
    nanogpt_char_folder(shakespeare_text, base / "shakespeare_char")
    out = {}
    for name, data in [("text", ["--data", str(shakespeare_path)]),
                       ("bin", ["--data", str(base / "shakespeare_char" / "train.bin"), "--val-data",
                                str(base / "shakespeare_char" / "val.bin")])]:
        r = run_cli("train.py", *data, *SAME, "--out-dir", str(base / name),
                    env={"XDG_CACHE_HOME": str(base / f"cache-{name}")})
        assert r.returncode == 0, r.stderr
        out[name] = (base / name, r.stdout)
    out["folder"] = base / "shakespeare_char"
    return out


def _line(stdout: str, prefix: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(prefix))


def loss_rows(run: Path) -> dict[int, tuple[float, float]]:
    return {r["step"]: (r["train_loss"], r["val_loss"]) for r in
            map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""  # r50k_base's


TK_NAME = "bjtest_shakes"  # the plugin's encoding: a name no real encoding has


ITERS = ["--max-iters", "100", "--eval-interval", "50"]


def _paragraphs(text: str) -> list[str]:
    """The text as documents, each ending in a blank line: so the BPEs learn '\\n\\n', as GPT-2's has (628)."""
    return [p + "\n\n" for p in text.split("\n\n")]


@pytest.fixture(scope="session")
def hf_json(tmp_path_factory, shakespeare_text) -> Path:
    """A byte-level BPE tokenizer.json (vocab 500) trained on tinyshakespeare."""
    pytest.importorskip("tokenizers")
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
    regex = pytest.importorskip("regex")  # tiktoken's own dependency: the \p{L} classes of GPT-2's pattern
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


@pytest.fixture(scope="session")
def tk_ranks(shakespeare_text) -> dict[bytes, int]:
    ranks = learn_ranks(shakespeare_text, 300)
    assert len(ranks) == 556 and b"\n\n" in ranks and b" the" in ranks
    return ranks


@pytest.fixture(scope="session")
def tk_enc(tk_ranks):
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding(name=TK_NAME, pat_str=GPT2_PAT, mergeable_ranks=tk_ranks, special_tokens={})


@pytest.fixture(scope="session")
def plugin(tmp_path_factory, tk_ranks) -> Path:
    return write_plugin(tmp_path_factory.mktemp("plugin"), tk_ranks)


def _env(plugin: Path, cache: Path | None = None) -> dict:
    """A subprocess's environment: the repo and the plugin importable, the test's cache."""
    return {"PYTHONPATH": f"{ROOT}{os.pathsep}{plugin}",
            "XDG_CACHE_HOME": str(cache or os.environ["XDG_CACHE_HOME"])}


@dataclasses.dataclass
class BpeRun:
    kind: str  # "json" or "tiktoken"
    spec: str  # its --tokenizer
    shown: str  # how the data: line names it
    run: Path
    cache: Path  # the run's own cache: its token file
    stdout: str
    encode: object  # whole text -> ids, by tokenizers / tiktoken themselves


@pytest.fixture(scope="session", params=["json", "tiktoken"])
def bpe(request, tmp_path_factory, hf_json, tk_enc, plugin, shakespeare_path) -> BpeRun:
    """A 100-step run on tinyshakespeare read with the tokenizer.json, or the tiktoken encoding (read-only for its
    users: the session shares it)."""
    tokenizers = pytest.importorskip("tokenizers")
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


def metric_rows(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def _python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(_shakespeare()), "JAX_PLATFORMS": "cpu",
           **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


SHORT = ("--max-iters", "300", "--eval-interval", "100", "--sample-tokens", "0")


def _train(out: Path, *extra: str) -> Path:
    """A short real tinyshakespeare run into `out`."""
    r = run_script("train.py", *SHORT, "--out-dir", str(out), *extra)
    assert r.returncode == 0, r.stderr
    return out


def _wired(flag: str) -> bool:
    """Whether scripts/train.py accepts `flag` yet."""
    from bigram_jax.cli.train import train_parser

    return flag in train_parser()._option_string_actions


def _have(module: str) -> bool:
    """Whether an optional extra is installed (found, not imported: collection stays fast)."""
    return importlib.util.find_spec(module) is not None


# the first fixture run also exercises train.py --plot/--tensorboard once they exist (one run fewer to pay for)
TRAIN_FLAGS = (("--plot",) if _wired("--plot") and _have("matplotlib") else ()) + \
    (("--tensorboard",) if _wired("--tensorboard") and _have("tensorboardX") else ())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two short runs on the real corpus: the lecture's constant lr, and a cosine schedule. One pair per test file
    (not per session): scripts/plot.py's default writes its pictures into the second run's folder."""
    base = tmp_path_factory.mktemp("runs")
    return (_train(base / "constant", *TRAIN_FLAGS),
            _train(base / "cosine", "--lr-schedule", "cosine", "--warmup-iters", "20", "--max-iters", "200"))


def check_png(path: Path) -> tuple[int, int]:
    """Assert a complete PNG of sensible size and pixel dimensions; returns (width, height)."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert raw[12:16] == b"IHDR" and raw[-8:-4] == b"IEND", f"{path} is truncated"
    width, height = struct.unpack(">II", raw[16:24])
    assert 10_000 < len(raw) < 2_000_000, f"{path}: {len(raw)} bytes"
    assert 600 <= width <= 4000 and 400 <= height <= 2000 and width > height, (width, height)
    return width, height


def _bare_env(tmp: Path) -> dict[str, str]:
    """An environment where `import matplotlib` and `import tensorboardX` fail, as when the extras are absent."""
    for name in ("matplotlib", "tensorboardX"):
        (tmp / "shadow" / name).mkdir(parents=True, exist_ok=True)
        (tmp / "shadow" / name / "__init__.py").write_text(f"raise ImportError({'No module named ' + name!r})\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp / "shadow"), str(ROOT)]), "JAX_PLATFORMS": "cpu"}


def _events(log_dir: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in the TFRecord event files under `log_dir`."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        raw, i = path.read_bytes(), 0
        while i < len(raw):  # TFRecord: u64 length, u32 crc, payload, u32 crc
            (n,) = struct.unpack("<Q", raw[i:i + 8])
            ev = Event.FromString(raw[i + 12:i + 12 + n])
            out += [(ev.step, v.tag, v.simple_value) for v in ev.summary.value]
            i += 16 + n
    return out
