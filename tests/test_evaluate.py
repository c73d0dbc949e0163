"""Exact full-split loss, the floors, and the lecture's estimate."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax import evaluate
from bigram_jax.counts import PairCounts
from bigram_jax.counts import dense_counts
from bigram_jax.data import split
from bigram_jax.corpus.tokenizers import CharTokenizer
from bigram_jax.model import BigramLanguageModel


@pytest.fixture(scope="module")
def splits(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    train, val = split(tok.encode(shakespeare_text))
    V = tok.vocab_size
    return train, val, dense_counts(train, V), dense_counts(val, V)


def test_exact_loss_is_the_mean_over_every_position():
    rng = np.random.default_rng()
    V = 11
    data = rng.integers(0, V, 5000).astype(np.int32)
    model = BigramLanguageModel(V)
    params = model.init(jax.random.key(int(rng.integers(2**31))), jnp.zeros((1, 1), jnp.int32))
    # brute force: the lecture's forward over the whole split as one sequence
    _, brute = model.apply(params, jnp.asarray(data[None, :-1]), jnp.asarray(data[None, 1:]))
    exact = evaluate.exact_loss(params, jnp.asarray(dense_counts(data, V), jnp.float32))
    np.testing.assert_allclose(exact, brute, rtol=2e-6)
    assert dense_counts(data, V).sum() == len(data) - 1


def test_floors_on_tinyshakespeare(splits):
    _, _, tc, vc = splits
    ft = evaluate.floor_train(tc)
    fv, alpha = evaluate.floor_val(tc, vc)
    assert 2.45 < ft < 2.455 and 2.48 < fv < 2.485 and 0 < alpha
    # alpha is the best add-alpha smoothing on val: moving it either way is worse
    for a in (alpha * 0.8, alpha * 1.25):
        assert evaluate._xent(vc, evaluate.smoothed_table(tc, a)) > fv


def test_floor_is_below_any_table(splits):
    _, _, tc, vc = splits
    ft = evaluate.floor_train(tc)
    counts = jnp.asarray(tc, jnp.float32)
    # the log of the count table itself reaches the floor; perturbations of it, or random tables, do worse
    logt = np.log(evaluate.smoothed_table(tc, 1e-9))
    for noise in (0.0, 0.05, 0.5):
        table = logt + noise * np.random.default_rng().standard_normal(logt.shape)
        params = {"params": {"token_embedding_table": {"embedding": jnp.asarray(table, jnp.float32)}}}
        loss = float(evaluate.exact_loss(params, counts))
        assert loss >= ft - 1e-5
        if noise == 0.0:
            assert loss == pytest.approx(ft, abs=1e-4)


def test_estimate_matches_exact_within_noise(splits):
    train, _, tc, _ = splits
    model = BigramLanguageModel(65)
    params = model.init(jax.random.key(7), jnp.zeros((1, 1), jnp.int32))
    exact = float(evaluate.exact_loss(params, jnp.asarray(tc, jnp.float32)))
    est = float(evaluate.estimate_loss(model, params, jax.random.key(8), jnp.asarray(train), 32, 8, 200))
    assert abs(est - exact) < 0.1  # 51,200 positions: the estimate's noise is a few hundredths
    assert est != exact


def test_sparse_counts_give_the_dense_results(splits, monkeypatch):
    train, val, tc, vc = splits
    V = tc.shape[0]
    pt, pv = PairCounts.of(train, V), PairCounts.of(val, V)
    np.testing.assert_array_equal(pt.dense(), tc)
    assert pt.n.sum() == len(train) - 1 and np.all(np.diff(pt.ids) > 0)
    np.testing.assert_array_equal(pt.row_totals(), tc.sum(axis=1))
    # floors computed on pairs equal the dense formulas they replace
    alpha = evaluate.floor_val(pt, pv)[1]
    dense_val = evaluate._xent(vc, evaluate.smoothed_table(tc, alpha))
    np.testing.assert_allclose(evaluate.floor_val(pt, pv)[0], dense_val, rtol=1e-12)
    np.testing.assert_allclose(evaluate.floor_train(pt), evaluate._xent(tc, tc / np.maximum(tc.sum(1, keepdims=True), 1)),
                               rtol=1e-12)
    # the sparse exact loss (used above DENSE_MAX_VOCAB) equals the dense one on a random table
    model = BigramLanguageModel(V)
    params = model.init(jax.random.key(7), jnp.zeros((1, 1), jnp.int32))
    put = lambda x: jnp.asarray(x)  # noqa: E731
    on_device = evaluate.device_counts(pv, jnp.float32, put)
    monkeypatch.setattr(evaluate, "DENSE_MAX_VOCAB", 0)  # what V > 2048 gets
    sparse_counts = evaluate.device_counts(pv, jnp.float32, put)
    assert set(on_device) == {"dense"} and set(sparse_counts) == {"rows", "cols", "n", "row_totals"}
    dense = evaluate.exact(params, on_device)
    sparse = evaluate.exact(params, sparse_counts)
    np.testing.assert_allclose(float(sparse), float(dense), rtol=2e-6)
