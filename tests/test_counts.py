"""Pair counts (bigram_jax/counts.py): a batch's counts against a brute-force count."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bigram_jax.counts import batch_counts


def test_batch_counts_brute_force():
    x = np.random.default_rng(0).integers(0, 7, (5, 9))
    y = np.random.default_rng(1).integers(0, 7, (5, 9))
    expect = np.zeros((7, 7))
    for a, b in zip(x.ravel(), y.ravel()):
        expect[a, b] += 1
    np.testing.assert_array_equal(batch_counts(jnp.asarray(x), jnp.asarray(y), 7), expect)
