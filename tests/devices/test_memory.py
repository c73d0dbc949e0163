"""What fits (bigram_jax/devices/memory.py): the plan and `auto` on lent GPUs, sizes checked at start."""
from __future__ import annotations

from types import SimpleNamespace

import jax
import pytest

from bigram_jax.config import Config
from bigram_jax.devices import memory, parallel
from bigram_jax.errors import UserError
from bigram_jax.train import DRAW_STEPS
from tests.conftest import one_line, run_cli

GIB = 2**30


H200_POOL = int(0.75 * 139 * GIB)  # XLA_PYTHON_CLIENT_PREALLOCATE's pool: XLA_PYTHON_CLIENT_MEM_FRACTION=.75


GPT2_V = 50_304


OPENWEBTEXT_TOKENS = 9_000_000_000


class FakeGpu:
    """A local device as JAX describes a GPU: its platform and what memory_stats() says (None: nothing)."""

    platform, device_kind = "gpu", "NVIDIA H200"

    def __init__(self, bytes_limit: int | None):
        self.bytes_limit = bytes_limit

    def memory_stats(self) -> dict | None:
        return None if self.bytes_limit is None else {"bytes_limit": self.bytes_limit, "bytes_in_use": 0}


def _on(monkeypatch, *devices: FakeGpu) -> list:
    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: list(devices))
    return list(devices)


def _mesh(model: int = 1) -> SimpleNamespace:
    return SimpleNamespace(shape={"data": 1, "model": model})  # all the plan reads of a mesh


def test_auto_on_one_h200(monkeypatch):
    """GPT-2's padded vocabulary trains on one H200 unsplit (60.7 GB of state, 65.8 GiB planned, within 90% of the
    104 GiB pool); OpenWebText stays on the host, tinyshakespeare goes to the device; a 64k vocabulary fits no
    split of one device and is refused at start in one line."""
    devices = _on(monkeypatch, FakeGpu(H200_POOL))
    cfg = Config(batch_size=64, block_size=256)
    assert parallel.choose_model_parallel(cfg, GPT2_V, devices) == 1
    assert memory.data_home(cfg, OPENWEBTEXT_TOKENS, GPT2_V, _mesh()) == "host"
    assert memory.data_home(Config(), 1_003_854, 65, _mesh()) == "device"
    plan = memory.run_bytes(cfg, GPT2_V, _mesh(), 0, DRAW_STEPS)
    assert 60 * GIB < sum(plan.values()) < 0.9 * H200_POOL
    memory.check_fits(plan)
    with pytest.raises(UserError, match="fits none"):
        parallel.choose_model_parallel(cfg, 65_536, devices)


def test_auto_on_two_80gb_gpus_splits_the_gpt2_table(monkeypatch):
    """The README's arithmetic: 60.7 GB of state is over 90% of an 80 GB GPU's default pool, so `auto` splits the
    rows over 2 GPUs, and the plan per device then fits."""
    devices = _on(monkeypatch, *[FakeGpu(int(0.75 * 80e9))] * 2)
    cfg = Config(batch_size=64, block_size=256)
    assert parallel.choose_model_parallel(cfg, GPT2_V, devices) == 2
    memory.check_fits(memory.run_bytes(cfg, GPT2_V, _mesh(2), 0, DRAW_STEPS))


def test_an_accelerator_that_does_not_say_its_memory(monkeypatch):
    """memory_stats() None (e.g. XLA_PYTHON_CLIENT_ALLOCATOR=platform): the host's memory says nothing of a
    device's, so nothing is refused on its account, and only a small corpus is copied to the device."""
    _on(monkeypatch, *[FakeGpu(None)] * 8)
    cfg = Config(batch_size=64, block_size=256)
    memory.check_fits({"table and AdamW state": 10 * memory.host_bytes()})  # 8 devices x 10 hosts: not refused
    assert memory.data_home(cfg, 1_000_000, GPT2_V, _mesh()) == "device"
    assert memory.data_home(cfg, OPENWEBTEXT_TOKENS, GPT2_V, _mesh()) == "host"


def test_sizes_are_checked_at_start_against_the_memory_there_is(tmp_path, run):
    (tmp_path / "big.json").write_text('{"max_iters": 1e100}')
    (tmp_path / "str.json").write_text('{"batch_size": "32"}')
    for argv, msg in ((["--batch-size", str(10**9)], "GiB are available"), (["--sample-tokens", str(10**10)], "2**31"),
                      (["--config", str(tmp_path / "big.json")], "max_iters"),
                      (["--config", str(tmp_path / "str.json")], "batch_size must be an int")):
        one_line(run_cli("train.py", *argv, "--out-dir", str(tmp_path / "o")), 2, msg)
    assert not (tmp_path / "o").exists()
    for argv, msg in ((["--num-tokens", str(10**10)], "2**31"), (["--num-samples", str(10**9)], "GiB are available")):
        one_line(run_cli("sample.py", "--checkpoint", str(run), *argv), 2, msg)
