"""Parity with the lecture's PyTorch model (torch_ref/parity.py): logits, loss, training, sampling."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the parity checks need PyTorch (pip install -e '.[torch]')")

from bigram_jax.corpus.tokenizers import CharTokenizer  # noqa: E402
from bigram_jax.counts import sequence_counts  # noqa: E402
from bigram_jax.data import split  # noqa: E402
from bigram_jax.model import BigramLanguageModel as FlaxBigram  # noqa: E402
from bigram_jax.model import params_of, table_of  # noqa: E402
from bigram_jax.sampling import generate  # noqa: E402
from tests.torch_ref.conftest import _run, _seed  # noqa: E402
from torch_ref import parity, stats  # noqa: E402
from torch_ref.convert import KEY, flax_to_torch  # noqa: E402


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


@pytest.fixture(scope="module")
def corpus(shakespeare_path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """tinyshakespeare as (train ids, val ids, V)."""
    text = shakespeare_path.read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = split(tok.encode(text))
    return train_ids, val_ids, tok.vocab_size


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


def test_checkpoint_roundtrip(corpus, tmp_path):
    _, val_ids, V = corpus
    seed = _seed()
    params = FlaxBigram(V).init(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32))
    _assert_all(parity.check_checkpoint(params, val_ids, tmp_path, seed), seed)


@pytest.mark.e2e
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
