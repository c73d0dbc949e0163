"""The step's memory section: XLA's own account (compiled.memory_analysis()) of the job's fused train loop, per
parameter, for each loss; the figures devices/memory.py plans with, and the test that they agree.

Compiled from abstract shapes, never run, so V = 8192 costs a compile on the CPU and no table in memory. The peak
is what XLA's buffer assignment holds at once: arguments + outputs - what donation aliases + temporaries. Apart
from the table's bytes per parameter, a step holds the corpus (an argument) and, for the gather loss, logits
(float32, of at most model.XENT_CHUNK positions at a time); both are measured apart, so each figure is the one it
names.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

MEASURED_V = 8192  # the vocabulary: large enough that the few KB of scalars and losses round away
CORPUS_TOKENS = 4096  # the abstract corpus the step reads (an argument, subtracted: not per parameter)
LECTURE_BT = (32, 8)  # the lecture's batch: the headline figure's
WIDE_BT = (64, 32)  # 2048 positions, one chunk of the gathered loss (model.XENT_CHUNK): the most logits it holds
GPT2_V, GPT2_BT = 50_304, (64, 256)  # GPT-2's vocabulary padded as nanoGPT pads it, at nanoGPT's batch


def analysis(V: int, loss: str, B: int, T: int) -> dict[str, int]:
    """XLA's memory analysis of train_steps (the state donated, as the job calls it) at V, B, T: bytes."""
    from bigram_jax.config import Config
    from bigram_jax.model import params_of
    from bigram_jax.train import init_state, train_steps

    cfg = Config(batch_size=B, block_size=T, loss=loss)
    state = jax.eval_shape(lambda: init_state(cfg, V, params_of(jax.ShapeDtypeStruct((V, V), jnp.float32))))
    data, steps = jax.ShapeDtypeStruct((CORPUS_TOKENS,), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32)
    m = train_steps.lower(state, data, steps, cfg).compile().memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}
    return {**out, "peak": out["argument"] + out["output"] - out["alias"] + out["temp"]}


def per_param(V: int) -> dict:
    """Bytes per parameter at V. The gather step's peak is linear in its logits: at the lecture's batch and at a wide
    one, it gives the state a step holds (the intercept) and how many copies of the logits it holds (the slope;
    a batch of one token is no intercept: XLA then keeps a copy of the table). The counts step at the lecture's
    batch adds its V x V work. The lecture's batch as measured stands against the issue's 16.5 plus the logits."""
    P, corpus = V * V, 4 * CORPUS_TOKENS
    (B, T), (b, t) = LECTURE_BT, WIDE_BT
    gather, wide, counts = analysis(V, "gather", B, T), analysis(V, "gather", b, t), analysis(V, "counts", B, T)
    logits, wide_logits = 4 * B * T * V / P, 4 * b * t * V / P
    copies = (wide["peak"] - gather["peak"]) / P / (wide_logits - logits)
    state = (gather["peak"] - corpus) / P - copies * logits
    return {"vocab_size": V, "params": P, "corpus_bytes": corpus, "state_bytes_per_param": state,
            "gather_logits_copies": copies, "counts_work_bytes_per_param": (counts["peak"] - corpus) / P - state,
            "wide_batch": {"B": b, "T": t, "gather": wide},
            "lecture_batch": {"B": B, "T": T, "logits_bytes_per_param": logits,
                              "gather": {**gather, "peak_bytes_per_param": gather["peak"] / P},
                              "counts": {**counts, "peak_bytes_per_param": counts["peak"] / P},
                              "bound_bytes_per_param": 16.5 + logits}}


def planned() -> dict:
    """What devices/memory.py plans with, in the same terms as per_param's figures."""
    from bigram_jax.devices import memory

    return {"state_bytes_per_param": memory.STATE_BYTES_PER_PARAM, "gather_logits_copies": memory.LOGITS_COPIES,
            "counts_work_bytes_per_param": memory.COUNTS_BYTES_PER_PARAM}


def gpt2(measured: dict) -> dict:
    """What the measured figures make of GPT-2's vocabulary on one device, gather loss (`auto` takes it: V > B T):
    bytes of state, and of logits (a chunk of at most XENT_CHUNK positions at a time)."""
    from bigram_jax.model import XENT_CHUNK

    (B, T), V = GPT2_BT, GPT2_V
    return {"vocab_size": V, "B": B, "T": T, "state_bytes": measured["state_bytes_per_param"] * V * V,
            "logits_bytes": measured["gather_logits_copies"] * 4 * min(B * T, XENT_CHUNK) * V}


def sec_memory(c) -> dict:
    """The step's bytes per parameter at V = 8192 (the section ignores the run's sizes: compiles only)."""
    measured = per_param(MEASURED_V)
    return {**measured, "plan": planned(), "gpt2": gpt2(measured)}
