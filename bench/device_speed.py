"""The device check's speed parts: the bench's own sections (training rows, generation, exact evaluation) with torch
on the same device, and one-device steps at large vocabularies: step time, peak memory against memory.py's plan,
and the memory bandwidth a step reaches against this device's own copy bandwidth.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from .context import QUICK, Ctx, Sizes

GIB = 2**30
FULL = Sizes(train=((32, 8), (512, 256)), gen_cap_s=2.0)  # the bench's rows; half its cap on the lecture's generate
WIDE = {False: (4096, 2_000_000, (64, 256)), True: (512, 200_000, (64, 32))}  # a token-id row: V, tokens, (B, T)
STEPS = {False: (64, 256, 1 << 20, 1 << 28), True: (8, 32, 1 << 16, 1 << 22)}  # B, T, corpus tokens, copy floats


def _ctx(quick: bool, corpus=None, sizes: Sizes | None = None) -> Ctx:
    """The bench's context on this device, torch on CUDA when JAX has a GPU and torch sees one."""
    import jax
    import torch

    from bigram_jax.config import Config
    from bigram_jax.corpus.load import load_corpus

    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    return Ctx(sizes or (QUICK if quick else FULL), 2 if quick else 5, corpus or load_corpus(Config()),
               torch_device=device)


def _head(c: Ctx) -> dict:
    import jax

    return {"jax_device": str(jax.devices()[0]), "torch_device": c.torch_device, "sizes": dataclasses.asdict(c.sizes)}


def part_train(quick: bool, box: float) -> dict:
    """Training tokens/s: the bench's rows on tinyshakespeare, and one on a synthetic token-id corpus."""
    from bigram_jax.config import make_config
    from bigram_jax.corpus.load import load_corpus
    from bigram_jax.corpus.synth import write_synth

    from .sections import sec_train

    c = _ctx(quick)
    rows = sec_train(c)
    V, tokens, (B, T) = WIDE[quick]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synth.bin"
        write_synth(path, V, tokens, 16, 0)
        wide = _ctx(quick, load_corpus(make_config({"data": str(path), "vocab_size": V})),
                    dataclasses.replace(c.sizes, train=((B, T),)))
        rows |= {f"{k}, V={V}": v for k, v in sec_train(wide).items()}
    return {**_head(c), "train": rows}


def part_generate(quick: bool, box: float) -> dict:
    """Generation seconds: one long and many short sequences, both samplers against torch's."""
    from .sections import sec_generate

    c = _ctx(quick)
    return {**_head(c), "generate": sec_generate(c)}


def part_eval(quick: bool, box: float) -> dict:
    """Exact losses of both splits against the lecture's estimate_loss."""
    from .evaluation import sec_eval

    c = _ctx(quick)
    return {**_head(c), "eval": sec_eval(c)}


def step_bytes(V: int, tokens: int) -> int:
    """Bytes a gather-loss step must move at the least (float32): the table's rows read for the logits and again
    for their gradient, which is scattered (read and written) into a zeroed (V, V) gradient; AdamW reads the
    table, gradient and both moments and writes the table and moments. 4 (B T V (2 + 2) + V^2 (1 + 4 + 3))."""
    return 4 * (4 * tokens * V + 8 * V * V)


def _copy_gbps(floats: int, repeats: int) -> float:
    """This device's copy bandwidth as JAX reaches it: one read and one write of `floats` float32 per pass."""
    from .limits import stream
    from .timing import median_per_unit

    s = median_per_unit({"copy": stream(floats)}, repeats, 0.2)["copy"]
    return 2 * 4 * floats / s / 1e9


def _peak_gib(device) -> float | None:
    """The device's peak bytes in use so far (None: the backend does not say, as the CPU's)."""
    stats = device.memory_stats() or {}
    return stats["peak_bytes_in_use"] / GIB if "peak_bytes_in_use" in stats else None


def _stepper(V: int, quick: bool) -> tuple:
    """(run(n): n steps, the state box, cfg, mesh, the plan, compile seconds): the job's own programs, one device."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bigram_jax.compile import programs
    from bigram_jax.config import Config
    from bigram_jax.devices import memory, parallel
    from bigram_jax.model import params_of
    from bigram_jax.train import DRAW_STEPS, init_on, init_state, train_steps

    B, T, tokens, _ = STEPS[quick]
    cfg = Config(batch_size=B, block_size=T, loss="gather")
    mesh = parallel.make_mesh(cfg, V, jax.devices()[:1])
    data = parallel.replicate(np.random.default_rng(0).integers(0, V, tokens, dtype=np.int32), mesh)
    abstract = jax.eval_shape(lambda: init_state(cfg, V, params_of(jax.ShapeDtypeStruct((V, V), jnp.float32))))
    t = time.perf_counter()
    box = [programs.run(init_on, out=abstract, profile="once", cfg=cfg, vocab_size=V, mesh=mesh)]
    step = programs.compiled(train_steps, box[0], data, np.int32(1), out=(box[0], 0.0), profile="loop", cfg=cfg,
                             mesh=mesh)
    compile_s = time.perf_counter() - t
    losses = []

    def run(n: int) -> None:
        box[0], batch = step(box[0], data, np.int32(n))
        losses.append(np.asarray(batch)[:min(n, len(batch))])  # the sync

    return run, box, losses, cfg, memory.run_bytes(cfg, V, mesh, tokens, DRAW_STEPS), compile_s


def _steps(V: int, quick: bool, save: bool) -> dict:
    """Steps at V: time, memory (peak after the steps, after a checkpoint saved while steps run, after a sample)."""
    import jax
    import numpy as np

    from bigram_jax.sampling import generate

    from .timing import median_per_unit

    device, repeats = jax.devices()[0], 2 if quick else 5
    run, box, losses, cfg, plan, compile_s = _stepper(V, quick)
    s = median_per_unit({"step": run}, repeats, 0.05 if quick else 0.5)["step"]
    tokens = cfg.batch_size * cfg.block_size
    out = {"vocab_size": V, "batch_size": cfg.batch_size, "block_size": cfg.block_size, "loss": "gather",
           "compile_s": compile_s, "step_ms": s * 1e3, "tokens_per_s": tokens / s, "peak_gib": _peak_gib(device),
           "plan_gib": sum(plan.values()) / GIB, "plan_parts_gib": {k: v / GIB for k, v in plan.items()},
           "bytes_per_step_model": step_bytes(V, tokens), "bandwidth_GBps": step_bytes(V, tokens) / s / 1e9}
    if save:
        out["peak_with_save_gib"] = _save_while_training(box, run, cfg, device)
    generate(box[0].params, jax.random.key(0), np.zeros((1, 1), np.int32), 200)
    out["peak_after_sample_gib"] = _peak_gib(device)
    out["copy_GBps"] = _copy_gbps(STEPS[quick][3], repeats)
    out["fraction_of_copy"] = out["bandwidth_GBps"] / out["copy_GBps"]
    finite = all(np.isfinite(x).all() for x in losses)
    peaks = [out[k] for k in ("peak_gib", "peak_with_save_gib") if out.get(k) is not None]
    within = all(p <= out["plan_gib"] for p in peaks) if peaks else None  # None: the backend does not say
    return {**out, "checks": {"losses finite": bool(finite), "peak during steps within the plan": within}}


def _save_while_training(box: list, run, cfg, device) -> float | None:
    """Save a checkpoint (orbax, async, from device memory) and train on while it is written: `device`'s peak after."""
    from bigram_jax.checkpoint.manager import Checkpoints

    with tempfile.TemporaryDirectory() as tmp, Checkpoints(Path(tmp) / "checkpoints") as ckpts:
        ckpts.save(box[0], {"config": cfg.to_dict()}, 0.0)
        run(20)  # the saved state's buffers are donated to these steps while orbax writes its copy
    return _peak_gib(device)


def part_steps_8k(quick: bool, box: float) -> dict:
    """One-device steps at V = 8192 (--quick: 512), with a checkpoint saved while training."""
    return _steps(512 if quick else 8192, quick, save=True)


def part_steps_50k(quick: bool, box: float) -> dict:
    """One-device steps at GPT-2's padded vocabulary, V = 50,304 (--quick: 2048): 2.53 B parameters."""
    return _steps(2048 if quick else 50_304, quick, save=False)
