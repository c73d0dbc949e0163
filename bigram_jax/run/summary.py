"""The end of a run: summary.json with where the time went, and the lecture's closing sample."""
from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from bigram_jax.compile import programs
from bigram_jax.config import Config
from bigram_jax.corpus.tokenizers import show
from bigram_jax.devices import parallel
from bigram_jax.run.run_dir import RunDir
from bigram_jax.run.signals import interruptible
from bigram_jax.sampling import generate


def summarize(job: Any, trained: Any, run: RunDir, before: float | None = None) -> dict:
    """The run's figures as summary.json, with the lecture's closing sample and where the time went."""
    cfg, V, state = job.cfg, job.corpus.vocab_size, trained.state
    step, train_s = int(state.step), trained.seconds["train"]
    tokens = (step - trained.start_step) * cfg.batch_size * cfg.block_size
    summary = {
        "step": step, "train_loss": trained.losses[0], "val_loss": trained.losses[1], **job.floors,
        "tokens_per_second": tokens / train_s if train_s else None, "train_seconds": train_s,
        "corpus_seconds": job.corpus_s, "compile_seconds": job.compile_s, "wall_seconds": run.elapsed(),
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "mesh": dict(job.mesh.shape), "processes": jax.process_count(), **parallel.shard_report(state),
        "loss": cfg.loss,
        "vocab_size": V, "data_sha256": job.corpus.sha256, "out_dir": cfg.out_dir,
    }
    t = time.perf_counter()
    if cfg.sample_tokens:  # every process samples (the table may be spread over all of them); one prints
        summary["sample"] = interruptible(sample_text, state.params, cfg, job.corpus.tokenizer)
        job.say(summary["sample"])
    summary["wall_seconds"] = run.elapsed()
    summary["seconds"] = {"before_job": before, "data": job.corpus_s - job.corpus.counts_s,
                          "counts": job.corpus.counts_s, "compile": job.compile_s,
                          **trained.seconds, "sample": time.perf_counter() - t, "job": summary["wall_seconds"]}
    summary["ended_at"] = time.time()  # the epoch second of the last line: what follows is the process's exit
    run.write_summary(summary)
    return summary


def sample_text(params: dict, cfg: Config, tokenizer: Any) -> str:
    """The lecture's closing sample: `sample_tokens` tokens after a context of id 0 ('\\n' in tinyshakespeare)."""
    key = programs.run(sample_key, np.uint32(cfg.seed), out=0, profile="once")  # apart from init and batches
    idx = np.zeros((1, 1), np.int32)
    out = generate(params, key, idx, cfg.sample_tokens, temperature=cfg.temperature, top_k=cfg.top_k or None,
                   run=programs.run_sample)
    return show(tokenizer, np.asarray(out)[0])  # indexed on the host: an eager device op would cost a compile


@jax.jit
def sample_key(seed: jax.Array) -> jax.Array:
    """The closing sample's key: one small program, where two eager random ops would each be compiled."""
    return jax.random.fold_in(jax.random.key(seed), 1)
