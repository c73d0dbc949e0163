"""The eval section: exact full-split losses from counts against the lecture's 200-batch estimate."""
from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax import evaluate
from bigram_jax.counts import dense_counts
from bigram_jax.model import BigramLanguageModel

from .context import Ctx

SPLITS = ("train", "val")


def float64_loss(table: np.ndarray, counts: np.ndarray) -> float:
    """The exact mean loss of `counts` under `table`, in float64: the reference for float32 rounding."""
    t = table.astype(np.float64)
    logp = t - t.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return float(-(counts * logp).sum() / counts.sum())


def estimators(c: Ctx, model: BigramLanguageModel, params: dict) -> tuple[dict, dict]:
    """({name: fn(n)}, {name: [per-split losses]}): the jax and the lecture's estimates, recording every value."""
    import torch_ref.model as ref

    tmodel, tsplits = c.torch_model(), {s: c.torch_data(s) for s in SPLITS}
    jdata, key = {s: jnp.asarray(getattr(c.corpus, s)) for s in SPLITS}, jax.random.key(1)
    values: dict[str, list[dict]] = {"jax_estimate": [], "torch_lecture": []}

    def jax_estimate(n: int) -> None:
        """n estimates of both splits, each from a fresh key (a reused one would repeat the same batches)."""
        for _ in range(n):
            k = jax.random.fold_in(key, len(values["jax_estimate"]))
            values["jax_estimate"].append({s: float(evaluate.estimate_loss(model, params, jax.random.fold_in(
                k, i), jdata[s], 32, 8, c.sizes.eval_iters)) for i, s in enumerate(SPLITS)})

    def torch_estimate(n: int) -> None:
        """n of the lecture's estimate_loss calls (both splits each)."""
        for _ in range(n):
            values["torch_lecture"].append(ref.estimate_loss(tmodel, tsplits, 32, 8, c.torch_device,
                                                             c.sizes.eval_iters))

    return {"jax_estimate": jax_estimate, "torch_lecture": torch_estimate}, values


def sec_eval(c: Ctx) -> dict:
    """Exact full-split losses (from counts) against the lecture's estimate: time, and the estimate's error."""
    model, params = BigramLanguageModel(c.V), c.params()
    counts = {s: dense_counts(getattr(c.corpus, s), c.V) for s in SPLITS}
    dev_counts = {s: jnp.asarray(n, jnp.float32) for s, n in counts.items()}
    exact = {s: float(evaluate.exact_loss(params, dev_counts[s])) for s in SPLITS}
    rounding = {s: abs(exact[s] - float64_loss(c.table(), n)) for s, n in counts.items()}
    fns, values = estimators(c, model, params)
    secs = c.time({"count_splits": lambda n: [dense_counts(getattr(c.corpus, s), c.V) for _ in range(n)
                                              for s in SPLITS],
                   "jax_exact": lambda n: [evaluate.exact_loss(params, dev_counts[s]).block_until_ready()
                                           for _ in range(n) for s in SPLITS], **fns})
    # every estimate taken while timing is one sample of its error: no extra runs needed
    err = {k: {s: sorted(abs(v[s] - exact[s]) for v in vs) for s in SPLITS} for k, vs in values.items()}
    return {"seconds": secs, "exact": exact, "exact_vs_float64": rounding,
            "estimates_taken": {k: len(v) for k, v in values.items()},
            "estimate_abs_error_median": {k: {s: statistics.median(e) for s, e in d.items()} for k, d in err.items()},
            "estimate_abs_error_max": {k: {s: e[-1] for s, e in d.items()} for k, d in err.items()}}
