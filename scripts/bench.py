"""Benchmark bigram_jax against the lecture's torch code (torch_ref.model), side by side in one run.

    python scripts/bench.py [--quick] [--only compile,train,scale,generate,eval,job,limits] [--repeats N] [--out F]

Each figure is the median of --repeats timed blocks after a warm-up, compile time kept apart and
`block_until_ready` before every clock read. The contenders of one measurement are interleaved repeat by
repeat, so on a shared, noisy machine the ratios of one run are the figures to quote. Writes --out (JSON)
and prints markdown tables.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import torch_ref.model as ref  # noqa: E402
from bigram_jax import evaluate  # noqa: E402
from bigram_jax.config import Config  # noqa: E402
from bigram_jax.generate import generate  # noqa: E402
from bigram_jax.model import BigramLanguageModel  # noqa: E402
from bigram_jax.run import load_corpus  # noqa: E402
from bigram_jax.train import init_state, train_steps  # noqa: E402

SECTIONS = ("compile", "train", "scale", "generate", "eval", "job", "limits")
LOSSES, SAMPLERS = ("counts", "gather"), ("cdf", "categorical")
Fn = Callable[[int], Any]  # fn(n) does n units of work and syncs before returning


# ------------------------------------------------------------------- torch contenders beside the lecture's
def get_batch_fast(data: torch.Tensor, batch_size: int, block_size: int, device: str = "cpu") -> tuple:
    """Tuned get_batch: one indexed copy of B rows of a strided (N, T+1) window view (beats 2-D indexing)."""
    ix = torch.randint(len(data) - block_size, (batch_size,))
    xy = data.unfold(0, block_size + 1, 1)[ix]  # (B, T+1)
    return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()


@torch.no_grad()
def generate_last(model: ref.BigramLanguageModel, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """The fair torch generate: feeds only the last token (all a bigram reads), collects tokens in a list."""
    last, out = idx[:, -1], [idx]
    for _ in range(max_new_tokens):
        last = torch.multinomial(F.softmax(model.token_embedding_table(last), dim=-1), num_samples=1)[:, 0]
        out.append(last[:, None])
    return torch.cat(out, dim=1)


def torch_trainer(data: torch.Tensor, V: int, B: int, T: int, batch_fn: Callable, threads: int = 0) -> Fn:
    """fn(n): n of the lecture's steps (fresh seeded model, AdamW) on batch_fn's batches; threads=1 pins torch."""
    torch.manual_seed(1337)
    model = ref.BigramLanguageModel(V)
    opt = ref.make_optimizer(model)

    def run(n: int) -> None:
        default = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            for _ in range(n):
                ref.train_step(model, opt, *batch_fn(data, B, T, "cpu"))
        finally:
            if threads:
                torch.set_num_threads(default)
    return run


# ---------------------------------------------------------------------------------------- timing helpers
def timed(fn: Fn, n: int) -> float:
    """Wall seconds of fn(n)."""
    t = time.perf_counter()
    fn(n)
    return time.perf_counter() - t


def median_per_unit(fns: dict[str, Fn], repeats: int, target_s: float) -> dict[str, float]:
    """Median seconds per unit of each fn, in blocks of ~target_s after a warm-up, contenders interleaved."""
    sizes = {}
    for name, fn in fns.items():
        n, dt = 1, timed(fn, 1)  # warm-up: first-call work (compilation, caches) stays out of the figures
        if dt < 10 * target_s:  # not plainly slow: probe again, warm
            dt = timed(fn, 1)
        while dt < target_s / 10:
            n *= 10
            dt = timed(fn, n)
        sizes[name] = max(1, round(n * target_s / dt))
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(timed(fn, sizes[name]) / sizes[name])
    return {name: statistics.median(ts) for name, ts in runs.items()}


def curve(fn: Fn, start: int, stop: int, cap_s: float, repeats: int) -> list[list[float]]:
    """[n, median seconds of fn(n)] for n = start, 2, 5, 10 x start ... stop, while a run would take < ~2 cap_s."""
    fn(max(1, start // 10))  # warm-up
    points, n = [], start
    while True:
        ts: list[float] = []
        while len(ts) < repeats and sum(ts) < cap_s:
            ts.append(timed(fn, n))
        points.append([n, statistics.median(ts)])
        nxt = min(n * 5 // 2 if str(n)[0] == "2" else n * 2, stop)
        if n >= stop or at(points, nxt)[0] > 2 * cap_s:  # the next run, predicted from the growth so far
            return points
        n = nxt


def exponent(points: list[list[float]]) -> float:
    """p in t ~ n^p between the last two points (1, linear, when there is one)."""
    (n1, t1), (n2, t2) = points[-2:] if len(points) > 1 else ([1, 1], [math.e, math.e])
    return math.log(t2 / t1) / math.log(n2 / n1)


def at(points: list[list[float]], n: int) -> tuple[float, bool]:
    """(seconds at n, extrapolated?): measured, or the last point grown by the last exponent, kept in [1, 2]
    (an underestimate for the lecture's generate, whose exponent only rises towards 2)."""
    if n == points[-1][0]:
        return points[-1][1], False
    return points[-1][1] * (n / points[-1][0]) ** min(2.0, max(1.0, exponent(points))), True


# A small launcher starts each timed job: a child forked from this large process would report this
# process's RSS as its peak (Linux keeps the pre-exec high-water mark in ru_maxrss).
LAUNCHER = ("import os, sys, time; t = time.perf_counter(); pid = os.posix_spawn(sys.argv[1], sys.argv[1:], "
            "os.environ, file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]); "
            "_, st, ru = os.wait4(pid, 0); "
            "print(time.perf_counter() - t, ru.ru_maxrss / 1024, os.waitstatus_to_exitcode(st))")


def run_process(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one process; raises with its stderr if it fails."""
    with tempfile.TemporaryFile() as log:
        out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=log, text=True, check=True).stdout.split()
        if out[2] != "0":
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited {out[2]}: {log.read().decode()[-2000:]}")
    return float(out[0]), float(out[1])


# ------------------------------------------------------------------------------------------ run context
@dataclass(frozen=True)
class Sizes:
    """What the sections measure; QUICK shrinks it to a smoke test."""

    train: tuple = ((32, 8), (512, 256))
    scale: tuple = ((32, 8), (512, 8), (64, 256), (512, 256), (4096, 256))  # 256 ... 1M tokens a step
    gen_ours: tuple = (1_000, 10_000, 100_000)  # one sequence
    gen_one: int = 10_000
    gen_many: tuple = (1_024, 1_000)  # (sequences, new tokens)
    gen_cap_s: float = 4.0  # the lecture's generate is measured while its next run would take < 2x this
    job: tuple = (3000, 300, 500)  # steps, eval interval, sampled tokens: the lecture's
    job_repeats: int = 3
    import_repeats: int = 3
    eval_iters: int = 200  # batches per split in the estimates (the lecture's)
    target_s: float = 0.25
    big: int = 1 << 26  # float32s in the memory-bandwidth test
    matmul: int = 2048


QUICK = Sizes(train=((32, 8), (64, 32)), scale=((32, 8), (64, 32)), gen_ours=(100, 500), gen_one=500,
              gen_many=(16, 100), gen_cap_s=0.2, job=(100, 50, 50), job_repeats=1, import_repeats=1, eval_iters=20,
              target_s=0.02, big=1 << 22, matmul=256)


@dataclass
class Ctx:
    """The corpus, sizes and repeats of a run, and what its sections share."""

    sizes: Sizes
    repeats: int
    corpus: Any
    memo: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    @property
    def V(self) -> int:
        """Vocabulary size."""
        return self.corpus.tokenizer.vocab_size

    def time(self, fns: dict[str, Fn], repeats: int = 0) -> dict[str, float]:
        """median_per_unit with this run's block size and repeats (at most `repeats` when given)."""
        return median_per_unit(fns, min(repeats or self.repeats, self.repeats), self.sizes.target_s)

    def trainer(self, B: int, T: int, loss: str) -> tuple[Fn, float]:
        """(fn(n): n fused bigram_jax steps at (B, T) with `loss`, compile seconds); compiled once, ahead."""
        if (B, T, loss) not in self.memo:
            cfg, data = Config(batch_size=B, block_size=T, loss=loss), jnp.asarray(self.corpus.train)
            box = [init_state(cfg, self.V)]
            t = time.perf_counter()
            step = train_steps.lower(box[0], data, jnp.int32(1), cfg).compile()
            compile_s = time.perf_counter() - t

            def run(n: int) -> None:
                box[0], loss_sum = step(box[0], data, jnp.int32(n))
                loss_sum.block_until_ready()
            self.memo[B, T, loss] = run, compile_s, lambda n: step(init_state(cfg, self.V), data, jnp.int32(n))[0]
        return self.memo[B, T, loss][:2]

    def params(self) -> dict:
        """A trained table (3000 counts steps at the lecture's sizes) for generate and eval."""
        if "params" not in self.memo:
            self.trainer(32, 8, "counts")
            self.memo["params"] = self.memo[32, 8, "counts"][2](3000).params
        return self.memo["params"]

    def table(self) -> np.ndarray:
        """params()'s (V, V) logit table."""
        return np.array(self.params()["params"]["token_embedding_table"]["embedding"])

    def torch_model(self) -> ref.BigramLanguageModel:
        """torch_ref's model holding params()'s table."""
        model = ref.BigramLanguageModel(self.V)
        with torch.no_grad():
            model.token_embedding_table.weight.copy_(torch.from_numpy(self.table()))
        return model

    def torch_data(self, split: str = "train") -> torch.Tensor:
        """A split as the lecture's int64 tensor."""
        return torch.from_numpy(getattr(self.corpus, split).astype(np.int64))

    def jax_gen(self, B: int, N: int, sampler: str) -> Fn:
        """fn(n): n calls of bigram_jax.generate, B sequences of N new tokens."""
        params, key, idx = self.params(), jax.random.key(0), np.zeros((B, 1), np.int32)
        return lambda n: [generate(params, key, idx, N, sampler=sampler).block_until_ready() for _ in range(n)]

    def lecture_curve(self, B: int, start: int, stop: int) -> list[list[float]]:
        """curve() of the lecture's generate for B sequences (memoized per B)."""
        if ("curve", B) not in self.memo:
            model, idx = self.torch_model(), torch.zeros((B, 1), dtype=torch.long)
            self.memo["curve", B] = curve(lambda n: model.generate(idx, n), start, stop, self.sizes.gen_cap_s,
                                          min(self.repeats, 3))
        return self.memo["curve", B]


# -------------------------------------------------------------------------------------------- sections
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


def sec_limits(c: Ctx) -> dict:
    """This machine's measured peak rates, and how far the counts step is from the bounds they set."""
    S, m = c.V * c.V, c.sizes.matmul
    big, dst, jbig = np.ones(c.sizes.big, np.float32), np.empty(c.sizes.big, np.float32), jnp.ones(c.sizes.big)
    mat, jmat, vxv = np.ones((m, m), np.float32), jnp.ones((m, m)), jnp.ones((c.V, c.V))
    stream, matmul = jax.jit(lambda x: x * 0.5 + 1.0), jax.jit(lambda a: a @ a)
    loop = jax.jit(lambda x, k: jax.lax.fori_loop(0, k, lambda i, x: x * 0.999 + 0.001, x))
    ids = np.random.default_rng(0).integers(0, S, c.sizes.big // 16)
    t = c.time({"numpy_copy": lambda n: [np.copyto(dst, big) for _ in range(n)],
                "jax_stream": lambda n: [stream(jbig).block_until_ready() for _ in range(n)],
                "numpy_matmul": lambda n: [mat @ mat for _ in range(n)],
                "jax_matmul": lambda n: [matmul(jmat).block_until_ready() for _ in range(n)],
                "loop_iteration": lambda n: loop(jnp.float32(0), n).block_until_ready(),
                "loop_vxv_pass": lambda n: loop(vxv, n).block_until_ready(),
                "numpy_bincount": lambda n: [np.bincount(ids, minlength=S) for _ in range(n)]})
    rates = {"dram_GBps": 2 * big.nbytes / min(t["numpy_copy"], t["jax_stream"]) / 1e9,
             "vxv_pass_GBps": 8 * S / max(t["loop_vxv_pass"] - t["loop_iteration"], 1e-12) / 1e9,
             "matmul_GFLOPs": 2 * m ** 3 / min(t["numpy_matmul"], t["jax_matmul"]) / 1e9,
             "bincount_Gtok_per_s": len(ids) / t["numpy_bincount"] / 1e9,
             "loop_iteration_us": t["loop_iteration"] * 1e6}
    steps = {}
    for B, T in c.sizes.train:
        N, trained = B * T, c.results.get("train", {}).get(f"{B}x{T}")
        measured = (trained["jax_counts"]["us_per_step"] if trained
                    else c.time({"s": c.trainer(B, T, "counts")[0]})["s"] * 1e6)
        # per token: x, y gathered (2 int32 reads), one scatter-add (int32 read + write), ~4 integer ops;
        # per table entry: ~12 float32 passes (counts, log-softmax fwd/bwd, loss, grad, AdamW m, v, params), ~30 flops
        tok_bytes, tab_bytes, flops = 16 * N, 48 * S, 4 * N + 30 * S
        memory_us = (tok_bytes / rates["dram_GBps"] + tab_bytes / rates["vxv_pass_GBps"]) / 1e3
        compute_us = flops / rates["matmul_GFLOPs"] / 1e3
        # practical floor: one compiled-loop iteration, a histogram at numpy's speed, the table passes in cache
        floor_us = rates["loop_iteration_us"] + (N / rates["bincount_Gtok_per_s"]
                                                 + tab_bytes / rates["vxv_pass_GBps"]) / 1e3
        steps[f"{B}x{T}"] = {"bytes": tok_bytes + tab_bytes, "flops": flops, "memory_bound_us": memory_us,
                             "compute_bound_us": compute_us, "practical_floor_us": floor_us, "measured_us": measured,
                             "fraction_of_bound": max(memory_us, compute_us) / measured,
                             "fraction_of_floor": floor_us / measured}
    return {"rates": rates, "counts_step": steps, "seconds": t}


SECTION_FNS = {"compile": sec_compile, "train": sec_train, "scale": sec_scale, "generate": sec_generate,
               "eval": sec_eval, "job": sec_job, "limits": sec_limits}


# ------------------------------------------------------------------------------------- goals and report
def goals(r: dict, sizes: Sizes) -> list[dict]:
    """The issue's goals whose sections ran: the target, this run's figure, met or not."""
    out = []
    add = lambda goal, figure, met: out.append({"goal": goal, "figure": figure, "met": bool(met)})  # noqa: E731
    if "32x8" in r.get("train", {}):
        x = r["train"]["32x8"]
        k, us = x["jax_counts"]["tokens_per_s"] / x["torch_lecture"]["tokens_per_s"], x["jax_counts"]["us_per_step"]
        add("train 32x8: >= 40x the lecture's torch loop, < 15 us/step", f"{k:.3g}x, {us:.3g} us/step",
            k >= 40 and us < 15)
    if "512x256" in r.get("train", {}):
        x = {n: v["tokens_per_s"] for n, v in r["train"]["512x256"].items()}
        k, k1 = x["jax_counts"] / x["torch_tuned"], x["jax_counts"] / x["torch_tuned_1thread"]
        add("train 512x256: >= 200x the tuned torch loop, >= 500M tokens/s",
            f"{k:.3g}x ({k1:.3g}x vs torch on 1 thread), {si(x['jax_counts'])} tokens/s",
            k >= 200 and x["jax_counts"] >= 5e8)
    if f"1x{sizes.gen_one}" in r.get("generate", {}):
        s = r["generate"][f"1x{sizes.gen_one}"]["seconds"]
        k = {x: s["torch_lecture"] / s[f"jax_{x}"] for x in SAMPLERS}
        add(f"generate 1x{sizes.gen_one}: >= 100x the lecture's generate",
            ", ".join(f"{x} {v:.3g}x" for x, v in k.items()), max(k.values()) >= 100)
    if "job" in r:
        add("whole lecture job: <= 0.35x the torch job's wall time", f"{r['job']['wall_ratio']:.3g}x",
            r["job"]["wall_ratio"] <= 0.35)
    if "eval" in r:
        k = r["eval"]["seconds"]["torch_lecture"] / r["eval"]["seconds"]["jax_exact"]
        e = max(r["eval"]["exact_vs_float64"].values())
        add("exact eval: >= 100x the lecture's estimate, no sampling error",
            f"{k:.3g}x; exact (float32 rounding {e:.1g})", k >= 100)
    return out


def si(x: float) -> str:
    """3 significant digits with a k/M/G prefix."""
    scale, prefix = next(((s, p) for s, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if abs(x) >= s), (1, ""))
    return f"{x / scale:.3g}{prefix}"


def secs(x: float) -> str:
    """A duration in us, ms or s."""
    return f"{x * 1e6:.3g} us" if x < 1e-3 else f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def times(a: float, b: float) -> str:
    """The ratio a / b as '12.3x'."""
    return f"{a / b:.3g}x"


def md(title: str, headers: list[str], rows: list[list]) -> list[str]:
    """A titled markdown table."""
    return ["", f"**{title}**", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def report(doc: dict) -> str:
    """The run's figures as markdown tables."""
    r, m = doc["results"], doc["machine"]
    out = [f"bigram_jax bench on {m['cpu']} ({m['cores']} cores, {m.get('memory_gib', 0):.0f} GiB): "
           f"jax {doc['versions']['jax']} ({doc['backend']}), torch {doc['versions']['torch']} "
           f"({doc['torch_threads']['intra_op']} threads); medians of {doc['repeats']}; "
           f"load average {doc['loadavg']['start'][0]:.2f} at start, {doc['loadavg']['end'][0]:.2f} at end"]
    if "train" in r:
        names = ("jax_counts", "jax_gather", "torch_lecture", "torch_tuned", "torch_tuned_1thread")
        rows = [[k, *(f"{si(v[n]['tokens_per_s'])} ({v[n]['us_per_step']:.3g} us)" for n in names),
                 times(v["jax_counts"]["tokens_per_s"], v["torch_lecture"]["tokens_per_s"]),
                 times(v["jax_counts"]["tokens_per_s"], v["torch_tuned"]["tokens_per_s"])]
                for k, v in r["train"].items()]
        out += md("Training: tokens/s (us per step)", ["B x T", "jax counts", "jax gather", "torch lecture",
                  "torch tuned", "torch tuned, 1 thread", "counts / lecture", "counts / tuned"], rows)
    if "scale" in r:
        s = r["scale"]
        rows = [[f"{k} ({v['B']}x{v['T']})", si(v["jax_counts"]), si(v["jax_gather"]), si(v["torch_tuned"]),
                 times(v["jax_counts"], v["torch_tuned"])] for k, v in s["train_tokens_per_s"].items()]
        out += md("How training cost grows: tokens/s", ["tokens/step (B x T)", "jax counts", "jax gather",
                  "torch tuned", "counts / tuned"], rows)
        lec, ours = dict(s["lecture_generate_s"]), s["generate_s"]
        rows = [[n, *(secs(ours[str(n)][f"jax_{k}"]) if str(n) in ours else "-" for k in SAMPLERS),
                 secs(lec[n]) if n in lec else "not run"] for n in sorted({int(n) for n in ours} | set(lec))]
        out += md(f"How generation cost grows: seconds for one sequence (t ~ n^p: jax cdf p = "
                  f"{s['ours_exponent']:.2f}, lecture p = {s['lecture_exponent']:.2f}; the lecture's was stopped "
                  f"after {s['lecture_stopped_at']} tokens)", ["new tokens", "jax cdf", "jax categorical",
                  "torch lecture"], rows)
    if "generate" in r:
        rows = []
        for k, v in r["generate"].items():
            t = v["seconds"]
            rows.append([k, secs(t["jax_cdf"]), secs(t["jax_categorical"]),
                         secs(t["torch_lecture"]) + (" (extrapolated)" if v["lecture_extrapolated"] else ""),
                         secs(t["torch_last_token"]), times(t["torch_lecture"], t["jax_cdf"]),
                         times(t["torch_lecture"], t["jax_categorical"]), times(t["torch_last_token"], t["jax_cdf"])])
        out += md("Generation: seconds", ["B x N", "jax cdf", "jax categorical", "torch lecture", "torch last-token",
                  "lecture / cdf", "lecture / categorical", "last-token / cdf"], rows)
    if "eval" in r:
        e, t = r["eval"], r["eval"]["seconds"]
        err = lambda k: "/".join(f"{e['estimate_abs_error_median'][k][p]:.2g}" for p in ("train", "val"))  # noqa
        rounding = "/".join(f"{v:.1g}" for v in e["exact_vs_float64"].values())
        out += md("Evaluation of both splits", ["method", "time", "abs. error vs exact (train/val, median)"], [
            ["jax exact, from counts", secs(t["jax_exact"]), f"none (float32 rounding {rounding})"],
            ["counting both splits, once a run", secs(t["count_splits"]), "-"],
            [f"jax {doc['sizes']['eval_iters']}-batch estimate", secs(t["jax_estimate"]), err("jax_estimate")],
            ["torch lecture estimate_loss", secs(t["torch_lecture"]), err("torch_lecture")],
            ["lecture / exact", times(t["torch_lecture"], t["jax_exact"]), ""]])
    if "job" in r:
        j = r["job"]
        out += md(f"Whole job ({j['steps']} steps, eval every {j['eval_interval']}, {j['sample_tokens']} sampled "
                  f"tokens): medians of {len(j['runs']['jax'])} alternated runs", ["process", "wall", "peak RSS"],
                  [*([j["commands"][k], secs(j[k]["wall_s"]), f"{j[k]['peak_rss_mib']:.0f} MiB"]
                     for k in ("jax", "torch")),
                   ["jax / torch", times(j["jax"]["wall_s"], j["torch"]["wall_s"]),
                    times(j["jax"]["peak_rss_mib"], j["torch"]["peak_rss_mib"])]])
    if "compile" in r:
        c = r["compile"]
        out += md("Compile and import: seconds", ["what", "seconds"], [[k, f"{v:.3g}"] for k, v in c.items()
                  if k != "import_s"] + [[f"import {k}", f"{v:.3g}"] for k, v in c["import_s"].items()])
    if "limits" in r:
        out += md("This machine's measured peak rates", ["rate", "value"],
                  [[k, f"{v:.3g}"] for k, v in r["limits"]["rates"].items()])
        cols = ("memory_bound_us", "compute_bound_us", "practical_floor_us", "measured_us")
        out += md("The counts step against those limits", ["B x T", "bytes", "flops", "memory bound", "compute bound",
                  "practical floor", "measured", "bound / measured", "floor / measured"],
                  [[k, si(v["bytes"]), si(v["flops"]), *(f"{v[f]:.3g} us" for f in cols),
                    f"{v['fraction_of_bound']:.0%}", f"{v['fraction_of_floor']:.0%}"]
                   for k, v in r["limits"]["counts_step"].items()])
    if doc["goals"]:
        out += md("Goals", ["goal", "this run", "met"],
                  [[g["goal"], g["figure"], "yes" if g["met"] else "**no**"] for g in doc["goals"]])
    return "\n".join(out)


def machine() -> dict:
    """CPU model, cores, memory and platform of this machine (Linux /proc where there is one)."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    proc = {p: Path(p).read_text() if Path(p).exists() else "" for p in ("/proc/cpuinfo", "/proc/meminfo")}
    for ln in proc["/proc/cpuinfo"].splitlines() + proc["/proc/meminfo"].splitlines():
        if ln.startswith("model name"):
            info["cpu"] = ln.split(":", 1)[1].strip()
        elif ln.startswith("MemTotal"):
            info["memory_gib"] = int(ln.split()[1]) / 2**20
    return info


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections, write the JSON, print the tables."""
    p = argparse.ArgumentParser(description="Benchmark bigram_jax against the lecture's torch code.")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of every section (~1 minute)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, help="timed blocks per figure (default: 5; 2 with --quick)")
    p.add_argument("--out", default="bench.json", help="the JSON of every figure (default: bench.json)")
    a = p.parse_args(argv)
    only = set(a.only.split(","))
    if only - set(SECTIONS) or (a.repeats is not None and a.repeats < 1):
        p.error(f"--only takes sections of {','.join(SECTIONS)}; --repeats must be >= 1")
    sizes = QUICK if a.quick else Sizes()
    c = Ctx(sizes, a.repeats or (2 if a.quick else 5), load_corpus(Config()))
    load_start = os.getloadavg()
    for name in (s for s in SECTIONS if s in only):
        t = time.perf_counter()
        c.results[name] = SECTION_FNS[name](c)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
    libs = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch")
    doc = {"machine": machine(), "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
           "versions": {n: metadata.version(n) for n in libs},
           "torch_threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
           "lecture_code": "torch_ref.model", "tuned_torch_batch": "scripts/bench.py get_batch_fast",
           "quick": a.quick, "repeats": c.repeats, "sizes": asdict(sizes),
           "loadavg": {"start": load_start, "end": os.getloadavg()}, "results": c.results,
           "goals": goals(c.results, sizes)}
    Path(a.out).write_text(json.dumps(doc, indent=2, default=float) + "\n")
    print(report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
