"""The measurements: compile, train, scale, generate, eval and job sections, each fn(Ctx) -> its JSON."""
from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

import torch_ref.model as ref
from bigram_jax import evaluate
from bigram_jax.model import BigramLanguageModel

from . import ROOT
from .context import LOSSES, SAMPLERS, Ctx, Sizes
from .timing import at, exponent, run_process, timed
from .torch_baselines import generate_last, get_batch_fast, torch_trainer


def sec_compile(c: Ctx) -> dict:
    """Compile seconds of a train chunk (each loss) and of generate (500 tokens); import seconds."""
    out: dict[str, Any] = {f"train_chunk_{loss}_s": c.trainer(32, 8, loss)[1] for loss in LOSSES}
    for s in SAMPLERS:
        gen = c.jax_gen(1, 500, s)
        out[f"generate_{s}_s"] = timed(gen, 1) - statistics.median(timed(gen, 1) for _ in range(3))
    code = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"
    mods = {"jax": "jax", "bigram_jax (train.py)": "bigram_jax.run, bigram_jax.checkpoint", "torch": "torch"}
    run = lambda mod: float(subprocess.run([sys.executable, "-c", code.format(mod)], cwd=ROOT,  # noqa: E731
                                           capture_output=True, text=True, check=True).stdout)
    out["import_s"] = {k: statistics.median(run(m) for _ in range(c.sizes.import_repeats)) for k, m in mods.items()}
    return out


def sec_train(c: Ctx) -> dict:
    """Training tokens/s: bigram_jax (each loss) against the lecture's torch loop and a tuned one."""
    out = {}
    for B, T in c.sizes.train:
        fns = {f"jax_{loss}": c.trainer(B, T, loss)[0] for loss in LOSSES}
        fns["torch_lecture"] = torch_trainer(c.torch_data(), c.V, B, T, ref.get_batch)
        fns["torch_tuned"] = torch_trainer(c.torch_data(), c.V, B, T, get_batch_fast)
        fns["torch_tuned_1thread"] = torch_trainer(c.torch_data(), c.V, B, T, get_batch_fast, threads=1)
        out[f"{B}x{T}"] = {k: {"us_per_step": s * 1e6, "tokens_per_s": B * T / s} for k, s in c.time(fns).items()}
    return out


def sec_scale(c: Ctx) -> dict:
    """How cost grows: training tokens/s from 256 to ~1M tokens a step; generate seconds from 1k to 100k tokens."""
    train = {}
    for B, T in c.sizes.scale:
        fns = {f"jax_{loss}": c.trainer(B, T, loss)[0] for loss in LOSSES}
        fns["torch_tuned"] = torch_trainer(c.torch_data(), c.V, B, T, get_batch_fast)
        train[str(B * T)] = {"B": B, "T": T, **{k: B * T / s for k, s in c.time(fns, 3).items()}}
    ns = c.sizes.gen_ours
    gen = {str(n): c.time({f"jax_{s}": c.jax_gen(1, n, s) for s in SAMPLERS}, 3) for n in ns}
    lecture = c.lecture_curve(1, ns[0], ns[-1])
    ours = math.log(gen[str(ns[-1])]["jax_cdf"] / gen[str(ns[0])]["jax_cdf"]) / math.log(ns[-1] / ns[0])
    return {"train_tokens_per_s": train, "generate_s": gen, "lecture_generate_s": lecture, "ours_exponent": ours,
            "lecture_exponent": exponent(lecture), "lecture_stopped_at": lecture[-1][0]}


def sec_generate(c: Ctx) -> dict:
    """One long and many short sequences: bigram_jax (both samplers) against the lecture's and a last-token loop."""
    out = {}
    for B, N in ((1, c.sizes.gen_one), c.sizes.gen_many):
        model, idx = c.torch_model(), torch.zeros((B, 1), dtype=torch.long)
        fns = {f"jax_{s}": c.jax_gen(B, N, s) for s in SAMPLERS}
        fns["torch_last_token"] = lambda n, m=model, i=idx, N=N: [generate_last(m, i, N) for _ in range(n)]
        took = c.time(fns, 3)
        start, stop = (c.sizes.gen_ours[0], c.sizes.gen_ours[-1]) if B == 1 else (max(1, N // 50), N)
        points = c.lecture_curve(B, start, stop)
        took["torch_lecture"], extrapolated = at([p for p in points if p[0] <= N], N)
        out[f"{B}x{N}"] = {"seconds": took, "lecture_extrapolated": extrapolated, "lecture_curve": points}
    return out


def sec_eval(c: Ctx) -> dict:
    """Exact full-split losses (from counts) against the lecture's 200-batch estimate: time, and its error."""
    splits, model, params = ("train", "val"), BigramLanguageModel(c.V), c.params()
    counts = {s: evaluate.split_counts(getattr(c.corpus, s), c.V) for s in splits}
    dev_counts = {s: jnp.asarray(n, jnp.float32) for s, n in counts.items()}
    t = c.table().astype(np.float64)
    logp = t - t.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    exact = {s: float(evaluate.exact_loss(model, params, dev_counts[s])) for s in splits}
    rounding = {s: abs(exact[s] + (n * logp).sum() / n.sum()) for s, n in counts.items()}  # vs float64
    tmodel, tsplits = c.torch_model(), {s: c.torch_data(s) for s in splits}
    jdata, key = {s: jnp.asarray(getattr(c.corpus, s)) for s in splits}, jax.random.key(1)
    values: dict[str, list[dict]] = {"jax_estimate": [], "torch_lecture": []}

    def jax_estimate(n: int) -> None:
        for _ in range(n):
            k = jax.random.fold_in(key, len(values["jax_estimate"]))
            values["jax_estimate"].append({s: float(evaluate.estimate_loss(model, params, jax.random.fold_in(
                k, i), jdata[s], 32, 8, c.sizes.eval_iters)) for i, s in enumerate(splits)})

    def torch_estimate(n: int) -> None:
        for _ in range(n):
            values["torch_lecture"].append(ref.estimate_loss(tmodel, tsplits, 32, 8, "cpu", c.sizes.eval_iters))

    secs = c.time({"count_splits": lambda n: [evaluate.split_counts(getattr(c.corpus, s), c.V)
                                              for _ in range(n) for s in splits],
                   "jax_exact": lambda n: [evaluate.exact_loss(model, params, dev_counts[s]).block_until_ready()
                                           for _ in range(n) for s in splits],
                   "jax_estimate": jax_estimate, "torch_lecture": torch_estimate})
    err = {k: {s: sorted(abs(v[s] - exact[s]) for v in vs) for s in splits} for k, vs in values.items()}
    return {"seconds": secs, "exact": exact, "exact_vs_float64": rounding, "estimates_taken": {
        k: len(v) for k, v in values.items()}, "estimate_abs_error_median": {
        k: {s: statistics.median(e) for s, e in d.items()} for k, d in err.items()}, "estimate_abs_error_max": {
        k: {s: e[-1] for s, e in d.items()} for k, d in err.items()}}


def sec_job(c: Ctx) -> dict:
    """The lecture's whole job as alternated whole processes: scripts/train.py against torch_ref.model."""
    steps, every, sample = c.sizes.job
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(c.corpus.path)}
    flags = [] if c.sizes.job == Sizes.job else [
        "--max-iters", str(steps), "--eval-interval", str(every), "--sample-tokens", str(sample)]
    cmds = {"jax": [sys.executable, "scripts/train.py", *flags],
            "torch": [sys.executable, "-m", "torch_ref.model", "--data", str(c.corpus.path), *flags]}
    runs: dict[str, list] = {k: [] for k in cmds}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(min(c.repeats, c.sizes.job_repeats)):
            for k, cmd in cmds.items():  # a fresh out-dir each time: train.py refuses one holding checkpoints
                runs[k].append(run_process(cmd + (["--out-dir", f"{tmp}/{r}"] if k == "jax" else []), env))
    med = {k: {"wall_s": statistics.median(w for w, _ in v), "peak_rss_mib": statistics.median(m for _, m in v)}
           for k, v in runs.items()}
    return {**med, "runs": runs, "steps": steps, "eval_interval": every, "sample_tokens": sample,
            "commands": {k: " ".join(v[1:]) for k, v in cmds.items()},
            "wall_ratio": med["jax"]["wall_s"] / med["torch"]["wall_s"]}
