"""The speed sections: compile and import, training tokens/s, how cost grows, generation; each fn(Ctx) -> JSON."""
from __future__ import annotations

import math
import statistics
import subprocess
import sys
from typing import Any

from .context import LOSSES, SAMPLERS, Ctx
from .paths import ROOT
from .timing import at, exponent, timed

# What `import` costs a fresh process; bigram_jax's line is what scripts/train.py loads to run a job
IMPORTS = {"jax": "import jax", "bigram_jax (train.py)": "import bigram_jax.run.job, bigram_jax.checkpoint",
           "torch": "import torch"}


def import_seconds(statement: str) -> float:
    """Seconds `statement` takes in a fresh interpreter (this process has imported everything already)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout)


def sec_compile(c: Ctx) -> dict:
    """Compile seconds of a train chunk (each loss) and of generate (500 tokens); import seconds."""
    out: dict[str, Any] = {f"train_chunk_{loss}_s": c.trainer(32, 8, loss)[1] for loss in LOSSES}
    for s in SAMPLERS:
        gen = c.jax_gen(1, 500, s)
        # generate compiles on first call: its compile time is that call less a warm call's
        out[f"generate_{s}_s"] = timed(gen, 1) - statistics.median(timed(gen, 1) for _ in range(3))
    out["import_s"] = {k: statistics.median(import_seconds(m) for _ in range(c.sizes.import_repeats))
                       for k, m in IMPORTS.items()}
    return out


def sec_train(c: Ctx) -> dict:
    """Training tokens/s: bigram_jax (each loss) against the lecture's torch loop and a tuned one."""
    import torch_ref.model as ref
    from torch_ref.baselines import get_batch_fast, torch_trainer

    out, dev = {}, c.torch_device
    host, on_device = c.torch_data(), c.torch_data(on_device=True)  # read only: one copy serves every row
    for B, T in c.sizes.train:
        fns = {f"jax_{loss}": c.trainer(B, T, loss)[0] for loss in LOSSES}
        # the lecture keeps the corpus in host memory and moves each batch to the device; the tuned loop does not
        fns["torch_lecture"] = torch_trainer(host, c.V, B, T, ref.get_batch, device=dev)
        fns["torch_tuned"] = torch_trainer(on_device, c.V, B, T, get_batch_fast, device=dev)
        fns["torch_tuned_1thread"] = torch_trainer(on_device, c.V, B, T, get_batch_fast, threads=1, device=dev)
        out[f"{B}x{T}"] = {k: {"us_per_step": s * 1e6, "tokens_per_s": B * T / s} for k, s in c.time(fns).items()}
    return out


def sec_scale(c: Ctx) -> dict:
    """How cost grows: training tokens/s from 256 to ~1M tokens a step; generate seconds from 1k to 100k tokens."""
    from torch_ref.baselines import get_batch_fast, torch_trainer

    train, on_device = {}, c.torch_data(on_device=True)  # read only: one copy serves every row
    for B, T in c.sizes.scale:
        fns = {f"jax_{loss}": c.trainer(B, T, loss)[0] for loss in LOSSES}
        fns["torch_tuned"] = torch_trainer(on_device, c.V, B, T, get_batch_fast, device=c.torch_device)
        train[str(B * T)] = {"B": B, "T": T, **{k: B * T / s for k, s in c.time(fns, 3).items()}}
    ns = c.sizes.gen_ours
    gen = {str(n): c.time({f"jax_{s}": c.jax_gen(1, n, s) for s in SAMPLERS}, 3) for n in ns}
    lecture = c.lecture_curve(1, ns[0], ns[-1])
    ours = math.log(gen[str(ns[-1])]["jax_cdf"] / gen[str(ns[0])]["jax_cdf"]) / math.log(ns[-1] / ns[0])
    return {"train_tokens_per_s": train, "generate_s": gen, "lecture_generate_s": lecture, "ours_exponent": ours,
            "lecture_exponent": exponent(lecture), "lecture_stopped_at": lecture[-1][0]}


def sec_generate(c: Ctx) -> dict:
    """One long and many short sequences: bigram_jax (both samplers) against the lecture's and a last-token loop."""
    import torch

    from torch_ref.baselines import generate_last, synced

    out = {}
    for B, N in ((1, c.sizes.gen_one), c.sizes.gen_many):
        model, idx = c.torch_model(), torch.zeros((B, 1), dtype=torch.long, device=c.torch_device)
        fns = {f"jax_{s}": c.jax_gen(B, N, s) for s in SAMPLERS}
        fns["torch_last_token"] = synced(lambda n, m=model, i=idx, N=N: [generate_last(m, i, N) for _ in range(n)],
                                         c.torch_device)
        took = c.time(fns, 3)
        start, stop = (c.sizes.gen_ours[0], c.sizes.gen_ours[-1]) if B == 1 else (max(1, N // 50), N)
        # the lecture's generate is quadratic: measured while affordable, extrapolated past that (and said so)
        points = c.lecture_curve(B, start, stop)
        took["torch_lecture"], extrapolated = at([p for p in points if p[0] <= N], N)
        out[f"{B}x{N}"] = {"seconds": took, "lecture_extrapolated": extrapolated, "lecture_curve": points}
    return out
