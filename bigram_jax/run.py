"""The training job: data, exact evaluation, fused training chunks, checkpoints, summary and a sample."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax import data as data_lib
from bigram_jax import evaluate
from bigram_jax.config import Config, UserError
from bigram_jax.generate import generate
from bigram_jax.model import BigramLanguageModel
from bigram_jax.session import Corpus, Interrupted, Session
from bigram_jax.train import init_state, lr_schedule, train_steps


def load_corpus(cfg: Config) -> Corpus:
    """Read, tokenize and split the corpus; count every transition of each split once."""
    path = data_lib.resolve_corpus(cfg.data)
    text, sha = data_lib.load_text(path)
    tok = data_lib.CharTokenizer.from_text(text)
    train, val = data_lib.split(tok.encode(text), cfg.train_frac)
    if len(train) <= cfg.block_size:
        raise UserError(f"corpus too short: the train split has {len(train)} tokens, "
                        f"block_size {cfg.block_size} needs at least {cfg.block_size + 1}")
    if len(val) < 2:
        raise UserError(f"corpus too short: the val split has {len(val)} token(s), at least 2 are needed")
    V = tok.vocab_size
    return Corpus(path=path, sha256=sha, tokenizer=tok, train=train, val=val,
                  train_counts=evaluate.split_counts(train, V), val_counts=evaluate.split_counts(val, V))


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
    V = corpus.tokenizer.vocab_size
    model = BigramLanguageModel(V)
    print(f"backend: {jax.default_backend()} | devices: {', '.join(str(d) for d in jax.devices())}")
    print(f"data: {corpus.path} ({len(corpus.train):,} train / {len(corpus.val):,} val tokens, vocab {V})")
    floor_t = evaluate.floor_train(corpus.train_counts)
    floor_v, alpha = evaluate.floor_val(corpus.train_counts, corpus.val_counts)
    print(f"floor: train loss {floor_t:.4f} (count table), val loss {floor_v:.4f} (train counts, add-{alpha:.3g} smoothing)")

    # init compiled as one program: eagerly it is a dozen small compilations
    state = session.state if session.state is not None else jax.jit(init_state, static_argnums=(0, 1))(cfg, V)
    train_data = jnp.asarray(corpus.train)
    counts = {s: jnp.asarray(c, jax.tree.leaves(state.params)[0].dtype)
              for s, c in (("train", corpus.train_counts), ("val", corpus.val_counts))}
    t0 = time.perf_counter()
    # compiled ahead of time, once: the step count is a traced argument, so every chunk reuses it
    step_fn = train_steps.lower(state, train_data, jnp.int32(1), cfg).compile()
    compile_s = time.perf_counter() - t0

    def exact(params) -> tuple[float, float]:
        return tuple(float(evaluate.exact_loss(model, params, counts[s])) for s in ("train", "val"))

    step = int(state.step)
    start_step, train_s, eval_s, loss_sum, since = step, 0.0, 0.0, jnp.zeros(()), 0
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
        state, chunk_loss = step_fn(state, train_data, jnp.int32(n))
        chunk_loss.block_until_ready()  # one sync per chunk, for the clock and the signal check
        dt = time.perf_counter() - t
        train_s += dt
        eval_s += dt
        chunk = max(1, int(n * cfg.chunk_seconds / max(dt, 1e-6)))
        loss_sum, since, step = loss_sum + chunk_loss, since + n, step + n
        _progress(step, cfg.max_iters, (step - start_step) * cfg.batch_size * cfg.block_size / max(train_s, 1e-9))
        at_eval = step % cfg.eval_interval == 0 or step == cfg.max_iters
        at_ckpt = step % ckpt_every == 0 or step == cfg.max_iters
        if at_eval or at_ckpt or session.stop_signal:
            losses = exact(state.params)
        if at_eval:
            session.log_eval(step, *losses, batch_loss=float(loss_sum) / since, lr=float(lr_schedule(cfg)(step - 1)),
                             tokens_per_second=since * cfg.batch_size * cfg.block_size / max(eval_s, 1e-9))
            loss_sum, since, eval_s = jnp.zeros(()), 0, 0.0
        if at_ckpt or session.stop_signal:
            session.save(state, *losses)
        if session.stop_signal:
            raise Interrupted(session.stop_signal, step)

    tokens = (step - start_step) * cfg.batch_size * cfg.block_size
    summary = {
        "step": step, "train_loss": losses[0], "val_loss": losses[1],
        "floor_train_loss": floor_t, "floor_val_loss": floor_v, "floor_val_alpha": alpha,
        "tokens_per_second": tokens / train_s if train_s else None, "train_seconds": train_s,
        "compile_seconds": compile_s, "wall_seconds": time.perf_counter() - session.t_start,
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "vocab_size": V, "data_sha256": corpus.sha256,
    }
    if cfg.sample_tokens:
        text = sample_text(state.params, cfg, corpus.tokenizer)
        print(text)
        summary["sample"] = text
    summary["wall_seconds"] = time.perf_counter() - session.t_start
    (Path(cfg.out_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def sample_text(params: dict, cfg: Config, tokenizer: data_lib.CharTokenizer) -> str:
    """The lecture's closing sample: `sample_tokens` characters after a '\\n'-id 0 context, decoded."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), 1)  # its own stream, apart from init and batches
    idx = np.zeros((1, 1), np.int32)
    out = generate(params, key, idx, cfg.sample_tokens, temperature=cfg.temperature, top_k=cfg.top_k or None)
    return tokenizer.decode(np.asarray(out[0]))
