"""The lecture's data: the train/val split and on-device batches (get_batch). Corpora and tokenizers: corpus/."""
from __future__ import annotations

import jax
import numpy as np

from bigram_jax.errors import UserError


def split(data: np.ndarray, train_frac: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """First `train_frac` of the tokens for training, the rest for validation (the lecture's split)."""
    n = int(train_frac * len(data))
    return data[:n], data[n:]


def batch_offsets(key: jax.Array, n_tokens: int, batch_size: int, block_size: int) -> jax.Array:
    """B random window starts in [0, n_tokens - T), as the lecture's torch.randint(len(data) - T, (B,))."""
    return jax.random.randint(key, (batch_size,), 0, n_tokens - block_size)  # (B,)


def window_slices(data: jax.Array, ix: jax.Array, block_size: int) -> jax.Array:
    """data[i:i+T+1] for each start i of ix (any shape): x is a window but its last, y but its first; (..., T+1)."""
    one = lambda i: jax.lax.dynamic_slice(data, (i,), (block_size + 1,))  # noqa: E731
    return jax.vmap(jax.vmap(one))(ix) if ix.ndim == 2 else jax.vmap(one)(ix)


def windows(data: jax.Array, ix: jax.Array, block_size: int) -> tuple[jax.Array, jax.Array]:
    """x = data[i:i+T], y = data[i+1:i+T+1] for each start i, read as one (T+1)-slice per row."""
    w = window_slices(data, ix, block_size)  # (B, T+1)
    return w[:, :-1], w[:, 1:]  # (B, T), (B, T)


def get_batch(key: jax.Array, data: jax.Array, batch_size: int, block_size: int) -> tuple[jax.Array, jax.Array]:
    """The lecture's get_batch on the device: B random windows, y shifted one ahead of x; runs inside jit."""
    return windows(data, batch_offsets(key, data.shape[0], batch_size, block_size), block_size)


def check_ids(idx: np.ndarray, vocab_size: int) -> np.ndarray:
    """Validate token ids on the host (nn.Embed silently returns NaN rows / wraps -1 otherwise)."""
    idx = np.asarray(idx)
    if not np.issubdtype(idx.dtype, np.integer):
        raise UserError(f"token ids must be integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= vocab_size):
        raise UserError(f"token ids must be in [0, {vocab_size}), got {idx.min()}..{idx.max()}")
    return idx.astype(np.int32)
