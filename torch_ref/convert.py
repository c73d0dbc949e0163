"""Weight conversion between torch_ref's state_dict and bigram_jax's params, and .pt files, format-free."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bigram_jax.errors import UserError
from bigram_jax.model import params_of, table_of
from bigram_jax.store.files import open_checked

KEY = "token_embedding_table.weight"
DTYPES = {torch.float16: jnp.float16, torch.bfloat16: jnp.bfloat16, torch.float32: jnp.float32,
          torch.float64: jnp.float64}


def _check_table(name: str, shape: tuple[int, ...], dtype: Any, is_float: bool, vocab_size: int | None) -> None:
    """Raise UserError unless the table is (V, V), of a float dtype, and V == vocab_size when given."""
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise UserError(f"{name} must be a square (V, V) table, got shape {tuple(shape)}")
    if vocab_size is not None and shape[0] != vocab_size:
        raise UserError(f"{name} has vocabulary size {shape[0]}, expected {vocab_size}")
    if not is_float:
        raise UserError(f"{name} must hold floats (float16/bfloat16/float32/float64), got {dtype}")


def torch_to_flax(state_dict: dict, vocab_size: int | None = None) -> dict:
    """torch_ref's state_dict -> bigram_jax params {'params': {'token_embedding_table': {'embedding': (V, V)}}}."""
    if not isinstance(state_dict, dict) or set(state_dict) != {KEY}:
        keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
        raise UserError(f"expected a state_dict with the single key {KEY!r}, got {keys}")
    w = state_dict[KEY]
    if not isinstance(w, torch.Tensor):
        raise UserError(f"{KEY} must be a torch tensor, got {type(w).__name__}")
    if w.layout != torch.strided:  # sparse or other layouts: the lecture's table is a plain dense tensor
        raise UserError(f"{KEY} must be a dense tensor, got layout {w.layout}")
    if w.is_meta:  # a shape without data (torch.device('meta')): map_location cannot give it any
        raise UserError(f"{KEY} is a meta-device tensor: it has a shape but no values (save the model's "
                        "table after it is initialized or trained)")
    _check_table(KEY, tuple(w.shape), w.dtype, w.dtype in DTYPES, vocab_size)
    if not bool(torch.isfinite(w).all()):
        raise UserError(f"{KEY} holds NaN or infinite values: nothing to train or sample from")
    if w.dtype == torch.float64 and not jax.config.jax_enable_x64:
        raise UserError(f"{KEY} is float64 but JAX runs without x64: enable jax_enable_x64 or convert "
                        "the table to float32 first")
    w = w.detach().cpu()
    host = w.float().numpy() if w.dtype == torch.bfloat16 else w.numpy()  # numpy has no bfloat16: widen, exactly
    table = jnp.array(host, dtype=DTYPES[w.dtype])  # a copy: the params never alias torch's storage
    return params_of(table)


def flax_to_torch(params: Any, vocab_size: int | None = None) -> dict[str, torch.Tensor]:
    """bigram_jax params -> a state_dict that torch_ref's BigramLanguageModel loads."""
    try:
        table = table_of(params)
        ok = hasattr(table, "dtype") and len(jax.tree.leaves(params)) == 1  # anything else would be lost
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError("expected bigram_jax params {'params': {'token_embedding_table': {'embedding': "
                        "(V, V)}}} and nothing else")
    is_float = np.dtype(table.dtype) in {np.dtype(d) for d in DTYPES.values()}
    _check_table("params embedding", tuple(table.shape), table.dtype, is_float, vocab_size)
    if table.dtype == jnp.bfloat16:
        w = torch.from_numpy(np.asarray(table, np.float32)).to(torch.bfloat16)
    else:
        w = torch.from_numpy(np.array(table))  # np.array copies: torch needs a writable buffer
    return {KEY: w}


def save_torch_state_dict(params: Any, path: str | Path) -> None:
    """Write bigram_jax params as a torch .pt state_dict (torch.save), loadable by the lecture's model.

    Written to a temporary file beside `path`, then renamed: a full disk never leaves a partial .pt behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        torch.save(flax_to_torch(params), tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as e:  # torch reports a missing parent folder as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {getattr(e, 'strerror', None) or str(e).splitlines()[0]}") from None


def load_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torch .pt state_dict safely (weights_only: no code runs from the file)."""
    with open_checked(path, "state_dict file") as f:  # regular: a FIFO would block, a device never end
        try:
            sd = torch.load(f, map_location="cpu", weights_only=True)
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001  (UnpicklingError, RuntimeError, EOFError...: a file torch cannot load)
            raise UserError(f"{path} is not a torch state_dict file ({type(e).__name__})") from None
    if not isinstance(sd, dict):
        raise UserError(f"{path} holds a {type(sd).__name__}, not a state_dict")
    return sd
