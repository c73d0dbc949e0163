"""The limits section: this machine's peak rates, and the counts step's roofline bounds and practical floor."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .context import Ctx
from .timing import Fn


def stream(floats: int) -> Fn:
    """fn(n): n synced passes of a compiled x * 0.5 + 1.0 over `floats` float32, one read and one write of each:
    the copy bandwidth JAX reaches here (this section's DRAM rate, the device check's copy GB/s), one probe."""
    x, f = jnp.ones(floats, jnp.float32), jax.jit(lambda a: a * 0.5 + 1.0)
    return lambda n: [f(x).block_until_ready() for _ in range(n)]


def sec_limits(c: Ctx) -> dict:
    """This machine's measured peak rates, and how far the counts step is from the bounds they set."""
    S, m = c.V * c.V, c.sizes.matmul
    big, dst = np.ones(c.sizes.big, np.float32), np.empty(c.sizes.big, np.float32)
    mat, jmat, vxv = np.ones((m, m), np.float32), jnp.ones((m, m)), jnp.ones((c.V, c.V))
    matmul = jax.jit(lambda a: a @ a)
    loop = jax.jit(lambda x, k: jax.lax.fori_loop(0, k, lambda i, x: x * 0.999 + 0.001, x))
    ids = np.random.default_rng(0).integers(0, S, c.sizes.big // 16)
    t = c.time({"numpy_copy": lambda n: [np.copyto(dst, big) for _ in range(n)],
                "jax_stream": stream(c.sizes.big),
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
