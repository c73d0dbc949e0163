"""The two losses (bigram_jax/loss.py): the counts loss equals the lecture's gather loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax.counts import batch_counts
from bigram_jax.loss import make_loss
from bigram_jax.model import BigramLanguageModel, table_of


@pytest.mark.parametrize("V,B,T", [(1, 3, 4), (2, 5, 7), (65, 32, 8), (300, 16, 64)])
def test_counts_loss_equals_gather_loss(V, B, T):
    seed = np.random.SeedSequence().entropy % 2**31  # fresh draws each run
    k = jax.random.split(jax.random.key(seed), 3)
    model = BigramLanguageModel(V)
    params = model.init(k[0], jnp.zeros((1, 1), jnp.int32))
    params = jax.tree.map(lambda t: t * 3.0, params)  # sharper rows than the init
    x = jax.random.randint(k[1], (B, T), 0, V)
    y = jax.random.randint(k[2], (B, T), 0, V)
    la, ga = jax.value_and_grad(make_loss(model, "gather"))(params, {"x": x, "y": y})
    lb, gb = jax.value_and_grad(make_loss(model, "counts"))(params, {"x": x, "y": y})
    lc = make_loss(model, "counts")(params, {"counts": batch_counts(x, y, V)})  # counts handed in, as the fused loop
    np.testing.assert_allclose(lb, la, rtol=1e-6, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(lc, lb, err_msg=f"seed {seed}")
    np.testing.assert_allclose(table_of(gb), table_of(ga), atol=1e-6, err_msg=f"seed {seed}")
