"""The Flax module: the lecture's (logits, loss) contract and its torch-like init."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax.model import BigramLanguageModel, table_of


def _init(V: int, seed: int = 0) -> dict:
    return BigramLanguageModel(V).init(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32))


def test_params_path_and_torch_like_init():
    params = _init(65)
    table = params["params"]["token_embedding_table"]["embedding"]  # the layout checkpoints and torch_ref rely on
    assert table_of(params) is table
    assert table.shape == (65, 65) and table.dtype == jnp.float32
    assert jax.tree.leaves(params) == [table]  # the table is the only parameter
    # N(0, 1) like torch's nn.Embedding (flax's default would give std 1/sqrt(V) = 0.12)
    assert abs(float(table.mean())) < 0.05 and abs(float(table.std()) - 1.0) < 0.03


def test_forward_contract():
    model, params = BigramLanguageModel(65), _init(65)
    idx = jax.random.randint(jax.random.key(1), (4, 8), 0, 65)
    logits, loss = model.apply(params, idx)
    assert logits.shape == (4, 8, 65) and loss is None
    table = table_of(params)
    np.testing.assert_array_equal(logits, table[idx])  # row idx of the table, nothing else
    targets = jax.random.randint(jax.random.key(2), (4, 8), 0, 65)
    logits2, loss = model.apply(params, idx, targets)
    assert logits2.shape == (32, 65) and loss.shape == ()
    logp = jax.nn.log_softmax(logits2)
    np.testing.assert_allclose(loss, -logp[jnp.arange(32), targets.reshape(-1)].mean(), rtol=1e-6)


def test_initial_loss_is_near_uniform_bound():
    # the lecture's sanity check: with N(0,1) logits the loss starts near -ln(1/65) + 0.5 ~ 4.67
    model, params = BigramLanguageModel(65), _init(65, seed=3)
    idx = jax.random.randint(jax.random.key(4), (64, 64), 0, 65)
    tgt = jax.random.randint(jax.random.key(5), (64, 64), 0, 65)
    assert 4.3 < float(model.apply(params, idx, tgt)[1]) < 5.1


def _optax_xent(table, x, y):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(table[x], y).mean()


@pytest.mark.parametrize("N", [7, 2048, 2048 * 2 + 5])
def test_the_gathered_loss_is_optaxs_with_its_gradient(N):
    """gathered_xent, a chunk of positions at a time (one chunk, exactly one, and a padded last one), against
    autodiff of optax's cross-entropy on the whole (N, V) gather: the value bit for bit, the gradient to rounding."""
    from bigram_jax.model import gathered_xent

    V = 97
    rng = np.random.default_rng(N)
    table = jnp.asarray(rng.normal(size=(V, V)).astype(np.float32))
    x, y = (jnp.asarray(rng.integers(0, V, N).astype(np.int32)) for _ in range(2))
    assert gathered_xent(table, x, y) == _optax_xent(table, x, y)
    np.testing.assert_allclose(jax.grad(gathered_xent)(table, x, y), jax.grad(_optax_xent)(table, x, y),
                               rtol=0, atol=1e-7)


def test_a_gather_step_holds_one_chunk_of_logits_not_the_batchs():
    """XLA's own account of the compiled train step (deterministic: no timing): at B*T = 16,384 positions the
    gather loss's working memory is the (V, V) gradient and about one (XENT_CHUNK, V) chunk, where autodiff of the
    whole gather held two (B*T, V) arrays, 16x as much here."""
    from bench.step_memory import analysis
    from bigram_jax.model import XENT_CHUNK

    V, B, T = 1024, 64, 256
    temp = analysis(V, "gather", B, T)["temp"]
    grad, chunk, logits = 4 * V * V, 4 * XENT_CHUNK * V, 4 * B * T * V
    assert temp <= grad + 2 * chunk < 2 * logits / 4, (temp, grad, chunk)


def test_the_gathered_loss_pads_with_real_positions():
    """The last chunk's padding (B*T not a multiple of XENT_CHUNK) reads a real row with its own logsumexp: a
    large logit in a row the batch never reads (an imported table's, say) cannot overflow into inf * 0 = NaN."""
    from bigram_jax.model import gathered_xent

    V, N = 33, 3000
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.normal(size=(V, V)).astype(np.float32)).at[0, 0].set(100.0)
    x, y = (jnp.asarray(rng.integers(1, V, N).astype(np.int32)) for _ in range(2))  # row 0 never read
    grad = jax.grad(gathered_xent)(table, x, y)
    assert bool(jnp.isfinite(grad).all())
    np.testing.assert_allclose(grad, jax.grad(_optax_xent)(table, x, y), rtol=0, atol=1e-7)
