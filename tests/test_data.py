"""The split and on-device batches (bigram_jax/data.py), and token-id checks."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigram_jax import data as data_lib
from bigram_jax.corpus.tokenizers import CharTokenizer
from bigram_jax.errors import UserError


def test_split_is_first_90_percent():
    data = np.arange(1000)
    train, val = data_lib.split(data)
    assert len(train) == 900 and train[-1] == 899 and val[0] == 900 and len(val) == 100


def test_batch_windows_come_from_the_split(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    train, _ = data_lib.split(tok.encode(shakespeare_text))
    x, y = jax.jit(data_lib.get_batch, static_argnums=(2, 3))(jax.random.key(0), jnp.asarray(train), 32, 8)
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape == (32, 8) and x.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    hay = train.tobytes()
    for row_x, row_y in zip(x, y):
        i = hay.find(row_x.tobytes())
        assert i >= 0 and i % 4 == 0, "x must be a window of the train split"
        assert hay.find(np.concatenate([row_x, row_y[-1:]]).tobytes()) >= 0


def test_batch_offsets_cover_the_whole_split():
    data = jnp.arange(20, dtype=jnp.int32)
    x, y = data_lib.get_batch(jax.random.key(1), data, 4000, 3)
    starts = np.asarray(x[:, 0])
    assert starts.min() == 0 and starts.max() == 16  # offsets in [0, len - T), as torch.randint(len - T)
    assert np.asarray(y[:, -1]).max() == 19


def test_check_ids():
    assert data_lib.check_ids(np.array([[0, 4]]), 5).dtype == np.int32
    for bad in ([[-1]], [[5]]):
        with pytest.raises(UserError, match="in \\[0, 5\\)"):
            data_lib.check_ids(np.array(bad), 5)
    with pytest.raises(UserError, match="integers"):
        data_lib.check_ids(np.array([[0.5]]), 5)
