"""The training job: data, exact evaluation, fused training chunks, checkpoints, summary and a sample."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from bigram_jax import evaluate, parallel
from bigram_jax.config import Config
from bigram_jax.corpus import Corpus, load_corpus  # noqa: F401  (load_corpus: part of this module's API)
from bigram_jax.data import CharTokenizer, TokenIds
from bigram_jax.generate import generate
from bigram_jax.loss import resolve_loss
from bigram_jax.model import BigramLanguageModel
from bigram_jax.session import Interrupted, Session
from bigram_jax.train import init_state, lr_schedule, train_steps


def _progress(step: int, total: int, tok_per_s: float) -> None:
    """A one-line progress bar on stderr, only for a terminal."""
    if not sys.stderr.isatty():
        return
    width = 30
    done = int(width * step / max(total, 1))
    end = "\n" if step >= total else ""
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{total} steps, {tok_per_s / 1e6:.1f}M tok/s{end}")
    sys.stderr.flush()


def train(cfg: Config, corpus: Corpus, session: Session) -> dict:
    """Train from the session's state to cfg.max_iters; returns the summary. Public entry point.

    Steps run in fused compiled chunks (`train_steps`) that end at each eval and checkpoint step and
    last about `cfg.chunk_seconds`, so a SIGTERM/SIGINT is honoured within about that time.
    """
    V, mesh = corpus.tokenizer.vocab_size, session.mesh
    model = BigramLanguageModel(V)
    say = print if session.primary else (lambda *a, **k: None)  # one process speaks for all
    say(f"backend: {jax.default_backend()} | devices: {', '.join(str(d) for d in jax.devices())}")
    say(parallel.describe(mesh))
    say(f"data: {corpus.path} ({len(corpus.train):,} train / {len(corpus.val):,} val tokens, vocab {V})")
    floor_t = evaluate.floor_train(corpus.train_counts)
    floor_v, alpha = evaluate.floor_val(corpus.train_counts, corpus.val_counts)
    say(f"floor: train loss {floor_t:.4f} (count table), val loss {floor_v:.4f} (train counts, add-{alpha:.3g} smoothing)")

    state = session.state
    if state is None:  # init compiled as one program, each array created in place on its devices
        shardings = parallel.shardings(jax.eval_shape(lambda: init_state(cfg, V)), mesh)
        state = jax.jit(init_state, static_argnums=(0, 1), out_shardings=shardings)(cfg, V)
    dtype = jax.tree.leaves(state.params)[0].dtype
    train_data = parallel.replicate(corpus.train, mesh)
    put = lambda x: parallel.replicate(x, mesh)  # noqa: E731
    counts = {s: evaluate.device_counts(c, dtype, put)
              for s, c in (("train", corpus.train_counts), ("val", corpus.val_counts))}
    t0 = time.perf_counter()
    # compiled ahead of time, once: the step count is a traced argument, so every chunk reuses it
    step_fn = train_steps.lower(state, train_data, np.int32(1), cfg, mesh).compile()
    compile_s = time.perf_counter() - t0

    def exact(params) -> tuple[float, float]:
        return tuple(float(evaluate.exact(model, params, counts[s])) for s in ("train", "val"))

    step = int(state.step)
    start_step, train_s, eval_s, loss_sum, since = step, 0.0, 0.0, 0.0, 0
    losses = exact(state.params)
    if step == 0:  # a resumed run logged its starting step before it stopped
        session.log_eval(step, *losses, batch_loss=None, lr=float(lr_schedule(cfg)(step)))
    ckpt_every = cfg.checkpoint_every or cfg.eval_interval
    chunk = min(64, cfg.eval_interval)
    while step < cfg.max_iters:
        target = min((step // cfg.eval_interval + 1) * cfg.eval_interval,
                     (step // ckpt_every + 1) * ckpt_every, cfg.max_iters)
        n = min(target - step, chunk)
        t = time.perf_counter()
        state, chunk_loss = step_fn(state, train_data, np.int32(n))
        chunk_loss.block_until_ready()  # one sync per chunk, for the clock and the signal check
        dt = time.perf_counter() - t
        train_s += dt
        eval_s += dt
        chunk = max(1, int(n * cfg.chunk_seconds / max(dt, 1e-6)))
        loss_sum, since, step = loss_sum + float(chunk_loss), since + n, step + n
        stop, chunk = parallel.agree(session.stop_signal, chunk)  # every process runs the same steps
        if session.primary:
            _progress(step, cfg.max_iters, (step - start_step) * cfg.batch_size * cfg.block_size / max(train_s, 1e-9))
        at_eval = step % cfg.eval_interval == 0 or step == cfg.max_iters
        at_ckpt = step % ckpt_every == 0 or step == cfg.max_iters
        if at_eval or at_ckpt or stop:
            losses = exact(state.params)
        if at_eval:
            session.log_eval(step, *losses, batch_loss=loss_sum / since, lr=float(lr_schedule(cfg)(step - 1)),
                             tokens_per_second=since * cfg.batch_size * cfg.block_size / max(eval_s, 1e-9))
            loss_sum, since, eval_s = 0.0, 0, 0.0
        if at_ckpt or stop:
            session.save(state, *losses)
        if stop:
            raise Interrupted(stop, step)

    tokens = (step - start_step) * cfg.batch_size * cfg.block_size
    summary = {
        "step": step, "train_loss": losses[0], "val_loss": losses[1],
        "floor_train_loss": floor_t, "floor_val_loss": floor_v, "floor_val_alpha": alpha,
        "tokens_per_second": tokens / train_s if train_s else None, "train_seconds": train_s,
        "compile_seconds": compile_s, "wall_seconds": time.perf_counter() - session.t_start,
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "mesh": dict(mesh.shape), "processes": jax.process_count(), **parallel.shard_report(state),
        "loss": resolve_loss(cfg.loss, V, cfg.batch_size, cfg.block_size),
        "vocab_size": V, "data_sha256": corpus.sha256,
    }
    if cfg.sample_tokens:  # every process samples (the table may be spread over all of them); one prints
        text = sample_text(state.params, cfg, corpus.tokenizer)
        say(text)
        summary["sample"] = text
    summary["wall_seconds"] = time.perf_counter() - session.t_start
    if session.primary:
        (Path(cfg.out_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def sample_text(params: dict, cfg: Config, tokenizer: CharTokenizer | TokenIds) -> str:
    """The lecture's closing sample: `sample_tokens` tokens after a context of id 0 ('\\n' in tinyshakespeare)."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), 1)  # its own stream, apart from init and batches
    idx = np.zeros((1, 1), np.int32)
    out = generate(params, key, idx, cfg.sample_tokens, temperature=cfg.temperature, top_k=cfg.top_k or None)
    return tokenizer.decode(out[0])
