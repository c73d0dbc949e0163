"""What fits (bigram_jax/devices/memory.py): the plan and `auto` on lent GPUs, sizes checked at start."""
from __future__ import annotations

from types import SimpleNamespace

import jax
import pytest

from bigram_jax.config import Config
from bigram_jax.devices import memory, parallel
from bigram_jax.errors import UserError
from bigram_jax.model import XENT_CHUNK
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
    """GPT-2's padded vocabulary trains on one H200 unsplit, within 90% of its 104 GiB pool; OpenWebText stays on
    the host, tinyshakespeare goes to the device; a 64k vocabulary fits no split of one device and is refused at
    start in one line."""
    devices = _on(monkeypatch, FakeGpu(H200_POOL))
    cfg = Config(batch_size=64, block_size=256)
    assert parallel.choose_model_parallel(cfg, GPT2_V, devices) == 1
    assert memory.data_home(cfg, OPENWEBTEXT_TOKENS, GPT2_V, _mesh()) == "host"
    assert memory.data_home(Config(), 1_003_854, 65, _mesh()) == "device"
    memory.check_fits(memory.run_bytes(cfg, GPT2_V, _mesh(), 0, DRAW_STEPS))
    with pytest.raises(UserError, match="fits none"):
        parallel.choose_model_parallel(cfg, 80_000, devices)


def test_auto_keeps_the_gpt2_table_on_one_80gb_gpu(monkeypatch):
    """Issue 27: at the measured 16 bytes per parameter plus two copies of a chunk's logits, all 50,304 ids train on
    one 80 GB GPU at JAX's default pool (75%): 40.5 GB of state and 0.8 GB of logits (B = 64, T = 256: a chunk of
    2048 positions) within 90% of 60 GB. `auto` picks the gather loss there (V > B T), whose figures these are."""
    devices = _on(monkeypatch, *[FakeGpu(int(0.75 * 80e9))] * 2)
    cfg = Config(batch_size=64, block_size=256)
    assert cfg.for_vocab(GPT2_V).loss == "gather"
    assert parallel.choose_model_parallel(cfg, GPT2_V, devices) == 1
    plan = memory.run_bytes(cfg, GPT2_V, _mesh(), 0, DRAW_STEPS)
    P = GPT2_V * GPT2_V
    assert plan["table, AdamW moments and gradient"] == 16 * P
    assert plan["loss"] == 2 * 4 * XENT_CHUNK * GPT2_V  # a chunk's logits and their gradient
    memory.check_fits(plan)


def test_the_plan_uses_the_step_memory_xla_measures():
    """The plan's bytes per parameter equal XLA's memory analysis of the compiled train loop, for each loss: the
    state (table, both moments, one gradient; donated, so updated in place), the gather loss's copies of its logits
    and the counts loss's V x V work. Compiled at V = 1024, not 8192 (the bench's): the figures are the same to
    0.03 B at V = 512, 1024 and 8192 (the few KB of scalars, losses and corpus are what differs)."""
    from bench.step_memory import per_param, planned

    measured, plan = per_param(1024), planned()
    assert plan == {"state_bytes_per_param": 16, "gather_logits_copies": 2, "counts_work_bytes_per_param": 4}
    for k, v in plan.items():
        assert measured[k] == pytest.approx(v, abs=0.05), (k, measured[k])
    lecture = measured["lecture_batch"]  # the plan's state and loss parts against XLA's peak, for each loss
    for loss in ("gather", "counts"):
        parts = memory.run_bytes(Config(loss=loss), 1024, _mesh(), 0, DRAW_STEPS)
        planned_bytes = parts["table, AdamW moments and gradient"] + parts["loss"]
        assert planned_bytes == pytest.approx(lecture[loss]["peak"] - measured["corpus_bytes"], rel=0.005), loss
    # past one chunk of positions the gathered loss holds no more logits than one chunk's: the plan's bound holds
    from bench.step_memory import analysis

    wide = analysis(1024, "gather", 64, 256)  # 8 chunks
    parts = memory.run_bytes(Config(batch_size=64, block_size=256, loss="gather"), 1024, _mesh(), 0, DRAW_STEPS)
    assert wide["peak"] - measured["corpus_bytes"] <= parts["table, AdamW moments and gradient"] + parts["loss"]
    assert lecture["gather"]["alias"] >= 12 * measured["params"]  # the table and both moments donated


def test_an_accelerator_that_does_not_say_its_memory(monkeypatch):
    """memory_stats() None (e.g. XLA_PYTHON_CLIENT_ALLOCATOR=platform): the host's memory says nothing of a
    device's, so nothing is refused on its account, and only a small corpus is copied to the device."""
    _on(monkeypatch, *[FakeGpu(None)] * 8)
    cfg = Config(batch_size=64, block_size=256)
    memory.check_fits({"table, AdamW moments and gradient": 10 * memory.host_bytes()})  # 8 devices x 10 hosts: not refused
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
