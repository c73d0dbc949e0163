"""Conversion between torch and Flax (torch_ref/convert.py): exact round trips, bad input refused."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the conversion needs PyTorch (pip install -e '.[torch]')")

from bigram_jax.errors import UserError  # noqa: E402
from bigram_jax.model import params_of  # noqa: E402
from torch_ref.convert import DTYPES, KEY, flax_to_torch, load_torch_state_dict, save_torch_state_dict, torch_to_flax  # noqa: E402


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
