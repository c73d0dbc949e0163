"""The five parity checks of bigram_jax against torch_ref, each returning its measured figures as Results.

Everything JAX runs on the CPU backend at highest matmul precision, so a GPU's TF32 cannot blur a
bit-for-bit comparison. `python -m torch_ref.parity` runs them all and prints the report.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bigram_jax.config import Config
from bigram_jax.counts import dense_counts, sequence_counts
from bigram_jax.evaluate import exact_loss
from bigram_jax.loss import make_loss
from bigram_jax.model import BigramLanguageModel as FlaxBigram
from bigram_jax.model import table_of
from bigram_jax.sampling import generate
from bigram_jax.train import batch_at, init_state, train_steps
from torch_ref import stats
from torch_ref.convert import (
    flax_to_torch,
    load_torch_state_dict,
    save_torch_state_dict,
    torch_to_flax,
)
from torch_ref.model import BigramLanguageModel, make_optimizer, train_step
from torch_ref.stats import topk_probs

CASES = ((1, 1, 1), (2, 3, 5), (65, 32, 8), (65, 2, 300), (300, 16, 64))  # (V, B, T)
CASES64 = ((1, 64, 64), (2, 64, 64), (65, 32, 8), (300, 16, 64))  # float64: many tokens per row too
P_MIN = 1e-4  # chi-square threshold; see check_sampling


@dataclasses.dataclass(frozen=True)
class Result:
    """One row of the report: a measured figure and the bound it must meet (<=, or >= for p-values)."""

    check: str
    figure: float
    bound: float
    at_least: bool = False

    @property
    def passed(self) -> bool:
        """Within the bound (a NaN figure never passes)."""
        return self.figure >= self.bound if self.at_least else self.figure <= self.bound


@contextlib.contextmanager
def cpu_highest() -> Iterator[None]:
    """JAX on the CPU backend at full float32 matmul precision, torch on one thread, for the duration."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tables this small gain nothing from threads, and spinning ones fight XLA's pool
    try:
        with jax.default_device(jax.devices("cpu")[0]), jax.default_matmul_precision("highest"):
            yield
    finally:
        torch.set_num_threads(threads)


def random_model(vocab_size: int, gen: torch.Generator, scale: float = 1.0,
                 dtype: torch.dtype = torch.float32) -> BigramLanguageModel:
    """torch_ref's model with an N(0, scale^2) table drawn from `gen` (the global torch RNG is untouched)."""
    model = BigramLanguageModel(vocab_size).to(dtype)
    with torch.no_grad():
        model.token_embedding_table.weight.copy_(scale * torch.randn(vocab_size, vocab_size, generator=gen))
    return model


def _differing(a: Any, b: Any) -> int:
    """How many elements of two float arrays differ in any bit (all of them if shape or dtype differ)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return max(a.size, b.size)
    bits = f"u{a.dtype.itemsize}"  # compare the raw bits: -0.0 vs 0.0 or two NaNs count as they are stored
    return int(np.count_nonzero(a.view(bits) != b.view(bits)))


def _ids(gen: torch.Generator, V: int, B: int, T: int) -> tuple[torch.Tensor, jax.Array]:
    """A random (B, T) batch of token ids, as torch int64 and JAX int32."""
    idx = torch.randint(V, (B, T), generator=gen)
    return idx, jnp.asarray(idx.numpy().astype(np.int32))


@functools.partial(jax.jit, static_argnums=0)
def _flax_logits(V: int, params: dict, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """bigram_jax's logits, (B, T, C) or with targets (B*T, C); module-level so checks share compilations."""
    return FlaxBigram(V).apply(params, x, y)[0]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _flax_loss_grad(V: int, loss: str, params: dict, x: jax.Array, y: jax.Array) -> tuple[jax.Array, dict]:
    """bigram_jax's loss `loss` and its gradient w.r.t. the params."""
    return jax.value_and_grad(make_loss(FlaxBigram(V), loss))(params, {"x": x, "y": y})


def _flax_init(V: int, rng: np.random.Generator) -> dict:
    """Params shaped by bigram_jax's own init (traced, not compiled) holding an N(0, 1) table from `rng`."""
    shapes = jax.eval_shape(FlaxBigram(V).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)


@cpu_highest()
def check_logits(seed: int, cases=CASES, to_flax: Callable = torch_to_flax, to_torch: Callable = flax_to_torch
                 ) -> Result:
    """1. Logits with shared weights are bit-identical, converting torch -> flax and flax -> torch."""
    gen, rng, bad = torch.Generator().manual_seed(seed), np.random.default_rng(seed), 0
    for V, B, T in cases:
        tm = random_model(V, gen, scale=3.0)
        params_j = _flax_init(V, rng)
        tm_j = BigramLanguageModel(V)
        tm_j.load_state_dict(to_torch(params_j))
        for torch_model, params in ((tm, to_flax(tm.state_dict())), (tm_j, params_j)):
            (idx, x), (tgt, y) = _ids(gen, V, B, T), _ids(gen, V, B, T)
            with torch.no_grad():
                lt, lt2 = torch_model(idx)[0], torch_model(idx, tgt)[0]  # (B, T, C), (B*T, C)
            bad += _differing(_flax_logits(V, params, x), lt.numpy()) + \
                _differing(_flax_logits(V, params, x, y), lt2.numpy())
    return Result(f"logits bit-identical, V in {sorted({c[0] for c in cases})}, both conversions (elements differing)",
                  bad, 0)


@cpu_highest()
def check_loss_grad(seed: int, cases=CASES, float64: bool = False) -> list[Result]:
    """2. The loss (relative) and its gradient w.r.t. the table (absolute) match torch, for both JAX losses.

    float32: within 1e-6, on batches of at most ~64 tokens per vocabulary row: torch's float32 embedding
    backward sums one term per token into its row, and its own error grows with that count (measured
    against float64: 5.5e-7 at V=2, B*T=256; 5.9e-6 at B*T=4096). float64 (`float64=True`): within 1e-12
    on any shape, which shows the formulas are the same.
    """
    gen, bound = torch.Generator().manual_seed(seed), 1e-12 if float64 else 1e-6
    worst = {(name, what): 0.0 for name in ("gather", "counts") for what in ("loss", "grad")}
    with jax.enable_x64(float64):
        for V, B, T in cases:
            tm = random_model(V, gen, dtype=torch.float64 if float64 else torch.float32)
            (idx, x), (tgt, y) = _ids(gen, V, B, T), _ids(gen, V, B, T)
            _, loss = tm(idx, tgt)
            loss.backward()
            lt, gt = loss.item(), tm.token_embedding_table.weight.grad.numpy()
            params = torch_to_flax(tm.state_dict())
            for name in ("gather", "counts"):
                lj, gj = _flax_loss_grad(V, name, params, x, y)
                gj = np.asarray(table_of(gj))
                worst[name, "loss"] = max(worst[name, "loss"], abs(float(lj) - lt) / max(abs(lt), 1e-30))
                worst[name, "grad"] = max(worst[name, "grad"], float(np.max(np.abs(gj - gt))))
    bits = "float64" if float64 else "float32"
    return [Result(f"{bits} {'loss rel.' if what == 'loss' else 'grad abs.'} diff ({name} loss)", v, bound)
            for (name, what), v in worst.items()]


def _train_both(train_ids: np.ndarray, V: int, cfg: Config, steps: int, dtype: torch.dtype
                ) -> tuple[float, float, dict]:
    """`steps` AdamW steps in torch and in bigram_jax from one table on one batch stream: max diffs, JAX params."""
    tm = random_model(V, torch.Generator().manual_seed(cfg.seed), dtype=dtype)
    state = jax.jit(init_state, static_argnums=(0, 1))(cfg, V, torch_to_flax(tm.state_dict()))  # 1 compile, not 8
    data = jnp.asarray(train_ids)
    draw = jax.jit(batch_at, static_argnums=3)  # the batches the job's train step draws, step by step
    batches = [draw(state.key, jnp.int32(s), data, cfg) for s in range(steps)]  # [{'x', 'y'}], each (B, T)
    as_torch = lambda a: torch.from_numpy(np.asarray(a, np.int64))  # noqa: E731
    opt = make_optimizer(tm, cfg.learning_rate)  # the lecture's AdamW (torch defaults = Config defaults)
    lt = np.array([train_step(tm, opt, as_torch(b["x"]), as_torch(b["y"])).item() for b in batches])
    lj = []
    for _ in range(steps):  # the job's fused loop, one step a call, to see every step's loss
        state, losses = train_steps(state, data, jnp.int32(1), cfg)
        lj.append(float(losses[0]))
    table = np.asarray(table_of(state.params))
    return float(np.max(np.abs(table - tm.token_embedding_table.weight.detach().numpy()))), \
        float(np.max(np.abs(np.array(lj) - lt))), state.params


@cpu_highest()
def check_training(train_ids: np.ndarray, V: int, seed: int, steps: int = 200, loss: str = "counts",
                   float32: bool = True) -> tuple[list[Result], dict | None]:
    """3. torch AdamW and bigram_jax's train_steps agree: to 1e-12 in float64 (same formulas), 5e-5 in float32.

    Returns the results and the float32-trained JAX params (None when `float32` is off).
    """
    cfg, tag = Config(seed=seed, loss=loss), f"{steps} AdamW steps, {loss} loss"
    with jax.enable_x64(True):  # scoped: the rest of the process keeps float32 defaults
        t64, l64, _ = _train_both(train_ids, V, cfg, steps, torch.float64)
    out = [Result(f"train float64 table max abs diff ({tag})", t64, 1e-12),
           Result(f"train float64 per-step loss max abs diff ({tag})", l64, 1e-12)]
    if not float32:
        return out, None
    t32, l32, params = _train_both(train_ids, V, cfg, steps, torch.float32)
    return out + [Result(f"train float32 table max abs diff ({tag})", t32, 5e-5),
                  Result(f"train float32 per-step loss max abs diff ({tag})", l32, 5e-5)], params


@cpu_highest()
def check_sampling(seed: int, V: int = 65, rows: int = 1000, new_tokens: int = 100, temperature: float = 0.8,
                   top_k: int = 10) -> list[Result]:
    """4. torch.multinomial and both JAX samplers draw each next token from the same softmax row (chi-square).

    rows * new_tokens transitions per sampler (100,000 by default). p >= 1e-4 passes: the ~7 tests of a run
    then raise a false alarm in under 1e-3 of seeds, while any real sampler bug (wrong row, temperature or
    top-k mishandled, off-by-one in the CDF) drives p far below 1e-20 at this sample size.
    """
    gen = torch.Generator().manual_seed(seed)
    tm = random_model(V, gen, scale=2.0)  # peaked rows: many small cells, so pooling is exercised
    table = tm.token_embedding_table.weight.detach().numpy()
    start = torch.randint(V, (rows, 1), generator=gen)
    with torch.random.fork_rng(devices=[]):  # the lecture's generate uses the global RNG; restore it after
        torch.manual_seed(seed)
        with torch.no_grad():
            c_torch = sequence_counts(tm.generate(start, new_tokens).numpy(), V)
    params, keys = torch_to_flax(tm.state_dict()), jax.random.split(jax.random.key(seed), 4)
    idx = start.numpy().astype(np.int32)
    out = [Result("sampling: torch.multinomial vs softmax (chi-square p)",
                  stats.goodness_of_fit(c_torch, topk_probs(table)), P_MIN, True)]
    for i, sampler in enumerate(("categorical", "cdf")):
        c_jax = sequence_counts(np.asarray(generate(params, keys[i], idx, new_tokens, sampler=sampler)), V)
        c_tk = sequence_counts(np.asarray(generate(
            params, keys[2 + i], idx, new_tokens, temperature=temperature, top_k=top_k, sampler=sampler)), V)
        out += [Result(f"sampling: jax {sampler} vs softmax (chi-square p)",
                       stats.goodness_of_fit(c_jax, topk_probs(table)), P_MIN, True),
                Result(f"sampling: jax {sampler} vs torch.multinomial (chi-square p)",
                       stats.homogeneity(c_jax, c_torch), P_MIN, True),
                Result(f"sampling: jax {sampler} T={temperature} top-k={top_k} vs renormalized (chi-square p)",
                       stats.goodness_of_fit(c_tk, topk_probs(table, temperature, top_k)), P_MIN, True)]
    return out


@cpu_highest()
def check_checkpoint(params: dict, val_ids: np.ndarray, tmp: Path, seed: int) -> list[Result]:
    """5. A table exported to .pt gives torch the same exact val loss; a torch .pt imported gives the same logits."""
    V = table_of(params).shape[0]
    save_torch_state_dict(params, tmp / "exported.pt")
    tm = BigramLanguageModel(V)
    tm.load_state_dict(load_torch_state_dict(tmp / "exported.pt"))
    val = torch.from_numpy(val_ids.astype(np.int64))
    with torch.no_grad():
        lt = tm(val[None, :-1], val[None, 1:])[1].item()  # the whole split as one (1, N) sequence
    lj = float(exact_loss(params, jnp.asarray(dense_counts(val_ids, V), jnp.float32)))
    gen = torch.Generator().manual_seed(seed)
    torch.save(random_model(V, gen).state_dict(), tmp / "torch.pt")
    tm.load_state_dict(torch.load(tmp / "torch.pt", weights_only=True))
    idx, x = _ids(gen, V, 16, 64)
    with torch.no_grad():
        lt_logits = tm(idx)[0].numpy()
    lj_logits = FlaxBigram(V).apply(torch_to_flax(load_torch_state_dict(tmp / "torch.pt"), V), x)[0]
    return [Result("checkpoint: exported .pt, torch full-split val loss vs exact_loss (rel. diff)",
                   abs(lt - lj) / lj, 1e-6),
            Result("checkpoint: imported torch .pt, logits (elements differing)", _differing(lj_logits, lt_logits), 0)]
