"""Parity with the lecture's PyTorch model (torch_ref): conversion, logits, loss, training, sampling, .pt files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the parity checks need PyTorch (pip install -e '.[torch]')")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bigram_jax.counts import sequence_counts  # noqa: E402
from bigram_jax.data import split  # noqa: E402
from bigram_jax.corpus.tokenizers import CharTokenizer  # noqa: E402
from bigram_jax.errors import UserError  # noqa: E402
from bigram_jax.sampling import generate  # noqa: E402
from bigram_jax.model import BigramLanguageModel as FlaxBigram, params_of, table_of  # noqa: E402
from torch_ref import parity, stats  # noqa: E402
from torch_ref.convert import (DTYPES, KEY, flax_to_torch, load_torch_state_dict,  # noqa: E402
                               save_torch_state_dict, torch_to_flax)
from torch_ref.model import BigramLanguageModel, estimate_loss, get_batch, get_batch_tuned, train  # noqa: E402
from torch_ref.model import main as torch_ref_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _seed() -> int:
    """A fresh seed per test (shown in failure messages, so a failure can be replayed with --seed)."""
    return int(np.random.SeedSequence().entropy % 2**32)


@pytest.fixture(scope="module")
def corpus(shakespeare_path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """tinyshakespeare as (train ids, val ids, V)."""
    text = shakespeare_path.read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = split(tok.encode(text))
    return train_ids, val_ids, tok.vocab_size


def _assert_all(results: list[parity.Result], seed: int) -> None:
    """Every result within its bound; the report and the seed on failure."""
    assert all(r.passed for r in results), f"seed {seed}:\n{parity.report(results)}"


@pytest.mark.parametrize("V", [1, 2, 65, 300])
def test_logits_bit_identical(V):
    seed = _seed()
    rng = np.random.default_rng(seed)
    _assert_all([parity.check_logits(seed, ((V, int(rng.integers(1, 40)), int(rng.integers(1, 80))),))], seed)


def _transposed(sd: dict) -> dict:
    """A deliberately wrong conversion: the table transposed."""
    return params_of(jnp.asarray(sd[KEY].numpy().T))


@pytest.mark.parametrize("V", [2, 65])
def test_negative_control_transposed_table_fails(V):
    seed = _seed()
    r = parity.check_logits(seed, ((V, 8, 16),), to_flax=_transposed)
    assert not r.passed and r.figure > 0, seed
    bad_torch = lambda p: {KEY: flax_to_torch(p)[KEY].T.contiguous()}  # noqa: E731
    assert not parity.check_logits(seed, ((V, 8, 16),), to_torch=bad_torch).passed, seed


@pytest.mark.parametrize("V", [1, 2, 65, 300])
def test_loss_and_grad_float32(V):
    seed = _seed()
    rng = np.random.default_rng(seed)
    B = int(rng.integers(1, 65))
    T = int(rng.integers(1, min(64, max(1, 64 * V // B)) + 1))  # <= 64 tokens per row: see check_loss_grad
    _assert_all(parity.check_loss_grad(seed, ((V, B, T),)), seed)


@pytest.mark.parametrize("V", [1, 2, 65, 300])
def test_loss_and_grad_float64_any_shape(V):
    seed = _seed()
    rng = np.random.default_rng(seed)
    case = (V, int(rng.integers(1, 65)), int(rng.integers(1, 65)))
    results = parity.check_loss_grad(seed, (case,), float64=True)
    _assert_all(results, seed)
    assert results[0].bound == 1e-12


def test_training_counts_loss_float64_and_float32(corpus):
    train_ids, _, V = corpus
    seed = _seed()
    results, params = parity.check_training(train_ids, V, seed, steps=200)
    _assert_all(results, seed)
    assert table_of(params).dtype == jnp.float32


def test_training_gather_loss(corpus):
    train_ids, _, V = corpus
    seed = _seed()
    _assert_all(parity.check_training(train_ids, V, seed, steps=50, loss="gather", float32=False)[0], seed)


def test_sampling_chi_square():
    seed = _seed()
    _assert_all(parity.check_sampling(seed), seed)


def test_chi_square_has_power():
    # the same samples must be rejected against a slightly wrong distribution, and a forbidden draw at once
    seed = _seed()
    gen = torch.Generator().manual_seed(seed)
    table = parity.random_model(65, gen, scale=2.0).token_embedding_table.weight.detach().numpy()
    params = params_of(jnp.asarray(table))
    idx = np.random.default_rng(seed).integers(0, 65, (1000, 1)).astype(np.int32)
    with parity.cpu_highest():  # the context of check_sampling: its compiled sampler is reused
        counts = sequence_counts(np.asarray(generate(params, jax.random.key(seed), idx, 100)), 65)
    assert stats.goodness_of_fit(counts, parity.topk_probs(table)) >= parity.P_MIN, seed
    # sampled at T=1, tested against T=0.9: rejected with p ~ 1e-200 on 100k draws (measured), not near 1e-4
    assert stats.goodness_of_fit(counts, parity.topk_probs(table, temperature=0.9)) < parity.P_MIN, seed
    assert stats.goodness_of_fit(counts, parity.topk_probs(table, top_k=40)) == 0.0, seed  # draws it forbids
    assert stats.homogeneity(counts, counts.T.copy()) < parity.P_MIN, seed  # rows mixed up


def test_chi_square_p_values_known():
    # one row off by 10 from 50/50, one on the nose: Pearson's statistic 4 on 2 dof, p = e^-2 (chi2(2) is Exp(1/2))
    counts, half = np.array([[60, 40], [50, 50]]), np.full((2, 2), 0.5)
    assert abs(stats.goodness_of_fit(counts, half) - np.exp(-2)) < 1e-14
    assert stats.goodness_of_fit(np.zeros((3, 3)), np.full((3, 3), 1 / 3)) == 1.0  # nothing sampled: nothing to reject
    assert stats.homogeneity(np.array([[5, 0], [0, 0]]), np.array([[0, 0], [0, 5]])) == 1.0  # no row visited by both
    assert stats.goodness_of_fit(counts, np.array([[1.0, 0.0], [0.5, 0.5]])) == 0.0  # a draw the law forbids


def test_checkpoint_roundtrip(corpus, tmp_path):
    _, val_ids, V = corpus
    seed = _seed()
    params = FlaxBigram(V).init(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32))
    _assert_all(parity.check_checkpoint(params, val_ids, tmp_path, seed), seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_conversion_roundtrip_is_exact(dtype):
    w = torch.randn(7, 7).to(dtype)
    params = torch_to_flax({KEY: w})
    assert params["params"]["token_embedding_table"]["embedding"].dtype == DTYPES[dtype]
    back = flax_to_torch(params)[KEY]
    assert back.dtype == dtype and torch.equal(back, w)


def test_float64_needs_x64():
    w = torch.randn(5, 5, dtype=torch.float64)
    with pytest.raises(UserError, match="x64"):
        torch_to_flax({KEY: w})
    with jax.enable_x64(True):
        table = torch_to_flax({KEY: w})["params"]["token_embedding_table"]["embedding"]
        assert table.dtype == jnp.float64 and np.array_equal(np.asarray(table), w.numpy())


@pytest.mark.parametrize("bad, match", [
    ({"token_embedding_table.weight": torch.zeros(3, 4)}, "square"),
    ({"token_embedding_table.weight": torch.zeros(3)}, "square"),
    ({"token_embedding_table.weight": torch.zeros(3, 3, dtype=torch.int64)}, "floats"),
    ({"embedding.weight": torch.zeros(3, 3)}, "single key"),
    ({KEY: torch.zeros(3, 3), "lm_head.weight": torch.zeros(3, 3)}, "single key"),
    ({KEY: np.zeros((3, 3), np.float32)}, "torch tensor"),
    ([torch.zeros(3, 3)], "single key"),
])
def test_torch_to_flax_rejects(bad, match):
    with pytest.raises(UserError, match=match):
        torch_to_flax(bad)


def test_conversion_checks_vocab_and_structure():
    with pytest.raises(UserError, match="expected 4"):
        torch_to_flax({KEY: torch.zeros(3, 3)}, vocab_size=4)
    ok = {"params": {"token_embedding_table": {"embedding": jnp.zeros((3, 3))}}}
    with pytest.raises(UserError, match="expected 5"):
        flax_to_torch(ok, vocab_size=5)
    extra = {"params": {"token_embedding_table": {"embedding": jnp.zeros((3, 3))}, "lm_head": jnp.zeros(3)}}
    for bad in (extra, {"params": {}}, {"token_embedding_table": jnp.zeros((3, 3))}, None):
        with pytest.raises(UserError, match="nothing else"):
            flax_to_torch(bad)
    with pytest.raises(UserError, match="floats"):
        flax_to_torch({"params": {"token_embedding_table": {"embedding": jnp.zeros((3, 3), jnp.int32)}}})


def test_load_torch_state_dict_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_torch_state_dict(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a torch state_dict"):
        load_torch_state_dict(tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="holds a list"):
        load_torch_state_dict(tmp_path / "list.pt")
    params = params_of(jnp.ones((4, 4)))
    save_torch_state_dict(params, tmp_path / "ok.pt")
    assert torch.equal(load_torch_state_dict(tmp_path / "ok.pt")[KEY], torch.ones(4, 4))
    with pytest.raises(UserError, match="cannot write"):
        save_torch_state_dict(params, tmp_path / "no" / "dir" / "x.pt")


def test_lecture_batches_and_tuned_batches_agree():
    data = torch.randint(65, (500,))
    torch.manual_seed(_seed())
    state = torch.get_rng_state()
    x, y = get_batch(data, 32, 8, "cpu")
    torch.set_rng_state(state)
    xt, yt = get_batch_tuned(data, 32, 8, "cpu")
    assert x.shape == (32, 8) and torch.equal(x, xt) and torch.equal(y, yt)
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one


def test_lecture_loop_prints_and_restores_train_mode():
    data = torch.randint(11, (2000,))
    model = BigramLanguageModel(11)
    lines: list[str] = []
    history = train(model, data[:1800], data[1800:], max_iters=25, eval_interval=10, eval_iters=3, log=lines.append)
    assert [h[0] for h in history] == [0, 10, 20] and model.training
    assert lines[0].startswith("step 0: train loss ") and ", val loss " in lines[0]
    assert set(estimate_loss(model, {"train": data, "val": data}, 4, 8, "cpu", 2)) == {"train", "val"}
    out = model.generate(torch.zeros((3, 2), dtype=torch.long), 5)
    assert out.shape == (3, 7) and int(out.max()) < 11


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m module args` with the repo importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)


def test_torch_ref_job_runs_like_the_lecture(shakespeare_path):
    r = _run("torch_ref.model", "--data", str(shakespeare_path), "--max-iters", "20", "--eval-interval", "10",
             "--eval-iters", "2", "--sample-tokens", "40")
    assert r.returncode == 0, r.stderr
    first, second, sample = r.stdout.split("\n", 2)
    assert first.startswith("step 0: train loss 4.") and second.startswith("step 10: ")
    assert len(sample) == 41 + 1  # the context character, 40 sampled ones, print's newline


@pytest.mark.parametrize("argv", [["--bogus"], ["--max-iters", "x"], ["--batch-size", "0"], ["--device", "nope"],
                                  ["--data", "/nonexistent/input.txt"]])
def test_torch_ref_job_bad_input_is_one_line(argv, capsys):
    assert torch_ref_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("torch_ref.model: error: ")


def test_parity_cli_bad_flags_are_one_line():
    r = _run("torch_ref.parity", "--seed", "banana")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_parity_cli_errors_and_exit_code(shakespeare_path, monkeypatch, capsys):
    assert parity.main(["--data", "/nonexistent/input.txt"]) == 2
    assert parity.main(["--seed", "-1"]) == 2
    assert "error" in capsys.readouterr().err
    fake = [parity.Result("ok", 0.0, 0.0), parity.Result("p", 1e-9, parity.P_MIN, at_least=True)]
    monkeypatch.setattr(parity, "run_all", lambda *a, **k: fake)
    assert parity.main(["--data", str(shakespeare_path)]) == 1
    out = capsys.readouterr().out
    assert "| ok | 0 | <= 0 | PASS |" in out and "| p | 1e-09 | >= 0.0001 | FAIL |" in out
    monkeypatch.setattr(parity, "run_all", lambda *a, **k: fake[:1])
    assert parity.main(["--data", str(shakespeare_path)]) == 0


def test_export_and_import_commands(tmp_path, shakespeare_path):
    """A trained checkpoint -> .pt -> torch gives the checkpoint's exact val loss; .pt -> checkpoint keeps logits."""
    from bigram_jax import load_checkpoint
    from tests.conftest import run_script
    from torch_ref.model import BigramLanguageModel as TorchBigram

    run = tmp_path / "run"
    assert run_script("train.py", "--max-iters", "300", "--sample-tokens", "0", "--out-dir", str(run)).returncode == 0
    pt = tmp_path / "table.pt"
    r = run_script("export_torch.py", "--checkpoint", str(run), "--out", str(pt))
    assert r.returncode == 0, r.stderr
    ck = load_checkpoint(run)
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
    bad = run_script("export_torch.py", "--checkpoint", str(run), "--out", str(pt))  # never overwrites
    assert bad.returncode == 2 and "exists" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
