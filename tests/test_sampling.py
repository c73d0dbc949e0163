"""Sampling (bigram_jax/sampling.py): shapes, determinism, top-k, temperature, draws, checks on input."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax import load_checkpoint, sampling
from bigram_jax.errors import UserError
from bigram_jax.model import BigramLanguageModel, params_of
from bigram_jax.sampling import generate, sample_categorical
from tests.conftest import ROOT


def _params(V: int, seed: int, scale: float = 1.0) -> dict:
    p = BigramLanguageModel(V).init(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32))
    return jax.tree.map(lambda t: t * scale, p)


@pytest.mark.parametrize("sampler", ["categorical", "cdf"])
def test_shapes_and_determinism(sampler):
    params = _params(65, 0)
    idx = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    a = generate(params, jax.random.key(1), idx, 50, sampler=sampler)
    b = generate(params, jax.random.key(1), idx, 50, sampler=sampler)
    c = generate(params, jax.random.key(2), idx, 50, sampler=sampler)
    assert a.shape == (2, 53) and a.dtype == jnp.int32
    np.testing.assert_array_equal(a[:, :3], idx)  # the context is kept, as the lecture's torch.cat
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < 65
    assert generate(params, jax.random.key(3), idx, 0).shape == (2, 3)


@pytest.mark.parametrize("sampler", ["categorical", "cdf"])
def test_top_k_draws_only_the_k_largest(sampler):
    V, k = 30, 3
    params = _params(V, 4)
    table = np.asarray(params["params"]["token_embedding_table"]["embedding"])
    allowed = np.argsort(-table, axis=1)[:, :k]
    out = np.asarray(generate(params, jax.random.key(5), np.arange(V)[:, None], 200, top_k=k, sampler=sampler))
    seen = np.zeros((V, V), bool)
    for row in out:
        for a, b in zip(row[:-1], row[1:]):
            assert b in allowed[a]
            seen[a, b] = True
    assert seen.sum() == V * k  # and every one of the k is drawn


def test_top_1_is_greedy_and_low_temperature_sharpens():
    params = _params(20, 6)
    table = np.asarray(params["params"]["token_embedding_table"]["embedding"])
    out = np.asarray(generate(params, jax.random.key(7), np.array([[0]]), 30, top_k=1))[0]
    for a, b in zip(out[:-1], out[1:]):
        assert b == table[a].argmax()
    cold = np.asarray(generate(params, jax.random.key(8), np.arange(20)[:, None], 1, temperature=1e-3))
    np.testing.assert_array_equal(cold[:, 1], table.argmax(axis=1))


def test_bad_arguments_are_user_errors():
    params = _params(10, 9)
    idx = np.zeros((1, 1), np.int32)
    for kw in ({"temperature": 0.0}, {"temperature": -1.0}, {"temperature": float("nan")},
               {"top_k": 0}, {"top_k": 11}, {"sampler": "magic"}):
        with pytest.raises(UserError):
            generate(params, jax.random.key(0), idx, 5, **kw)
    with pytest.raises(UserError, match="max_new_tokens"):
        generate(params, jax.random.key(0), idx, -1)
    for bad in (np.array([[10]]), np.array([[-1]]), np.zeros((1, 0), np.int32), np.zeros(3, np.int32)):
        with pytest.raises(UserError):
            generate(params, jax.random.key(0), bad, 5)


def _chi2_p(observed: np.ndarray, expected: np.ndarray) -> float:
    """Upper tail of Pearson's chi-square (scipy), cells with expected < 5 pooled."""
    from scipy.stats import chi2

    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    stat, dof = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum()) - 1
    return float(chi2.sf(stat, dof))


@pytest.mark.parametrize("sampler,temperature,top_k", [("categorical", 1.0, None), ("cdf", 1.0, None),
                                                       ("cdf", 0.7, 4), ("categorical", 1.5, 4)])
def test_draws_follow_the_softmax(sampler, temperature, top_k):
    V = 8
    params = _params(V, int(np.random.default_rng().integers(2**31)))
    table = np.asarray(params["params"]["token_embedding_table"]["embedding"], np.float64) / temperature
    if top_k:
        table = np.where(table >= np.sort(table, axis=1)[:, -top_k][:, None], table, -np.inf)
    probs = np.exp(table - table.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    out = np.asarray(generate(params, jax.random.key(11), np.arange(V)[:, None].repeat(64, 0), 400,
                              temperature=temperature, top_k=top_k, sampler=sampler))
    prev, nxt = out[:, :-1].ravel(), out[:, 1:].ravel()
    counts = np.zeros((V, V))
    np.add.at(counts, (prev, nxt), 1)
    expected = counts.sum(axis=1, keepdims=True) * probs
    assert counts[expected == 0].sum() == 0  # nothing outside the top-k
    assert _chi2_p(counts.ravel(), expected.ravel()) > 1e-4


def test_a_short_draw_from_a_wide_table_reads_only_its_rows(monkeypatch):
    """A draw that reads fewer rows than the table holds (a closing sample of a GPT-2-sized table) computes each
    row's logits as it reads it: no (V, V) temporaries beside the table, and the very tokens of the path that
    computes every row's logits first (with and without top-k, and at a temperature that overflows float32)."""
    V, S = 1024, jax.ShapeDtypeStruct
    compiled = sample_categorical.trace(S((V, V), jnp.float32), jax.random.key(0), S((4,), jnp.int32), np.float32(1),
                                        max_new_tokens=50, top_k=None).lower().compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 2 * V * V  # less than half one (V, V) float32 array
    table, last = jax.random.normal(jax.random.key(1), (V, V)) * 3, np.arange(4, dtype=np.int32)
    original, drawn = sampling._logits_by_row, {}
    for rows in (0, V):  # as it goes; every row first
        monkeypatch.setattr(sampling, "_logits_by_row", lambda t, temp, k, _, r=rows: original(t, temp, k, r))
        fresh = jax.jit(sampling.sample_categorical.__wrapped__, static_argnames=("max_new_tokens", "top_k"))
        drawn[rows] = [np.asarray(fresh(table, jax.random.key(2), last, np.float32(t), max_new_tokens=50, top_k=k)[0])
                       for t, k in ((1.0, None), (0.7, 10), (2e-38, None))]
    for a, b in zip(drawn[0], drawn[V]):
        np.testing.assert_array_equal(a, b)
    assert len({tuple(x.reshape(-1)) for x in drawn[0]}) == 3  # three different draws, not one repeated


def test_any_positive_temperature_samples_its_distribution_down_to_greedy():
    params = BigramLanguageModel(40).init(jax.random.key(3), jnp.zeros((1, 1), jnp.int32))
    idx = np.arange(40, dtype=np.int32)[:, None]
    greedy = np.asarray(generate(params, jax.random.key(1), idx, 30, top_k=1))
    for t in (1e-40, 1e-45, 1e-30):
        for sampler in ("categorical", "cdf"):
            out = np.asarray(generate(params, jax.random.key(1), idx, 30, temperature=t, sampler=sampler))
            np.testing.assert_array_equal(out, greedy)


def test_the_python_api_checks_what_it_can(tmp_path):
    model = BigramLanguageModel(7)
    params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    for x, y in (([[7]], None), ([[-1]], None), ([[1]], [[7]])):
        with pytest.raises(UserError, match=r"in \[0, 7\)"):
            model.apply(params, jnp.array(x), None if y is None else jnp.array(y))
    table = params["params"]["token_embedding_table"]["embedding"]
    with pytest.raises(UserError, match="NaN"):
        generate(params_of(table.at[2, 3].set(jnp.nan)), jax.random.key(0), np.zeros((1, 1), np.int32), 5)
    with pytest.raises(UserError, match="square"):
        generate(params_of(table[:, :5]), jax.random.key(0), np.zeros((1, 1), np.int32), 5)
    out = generate(params, jax.random.key(0), np.zeros((2, 1), np.int32), np.int64(5), temperature=np.float32(0.5),
                   top_k=jnp.int32(3))
    assert out.shape == (2, 6)
    with pytest.raises(UserError, match="step must be an integer"):
        load_checkpoint(ROOT / "tests" / "fixtures" / "v010_run", step="20")
