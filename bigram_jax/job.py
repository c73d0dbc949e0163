"""The training job, top to bottom: set up, train in fused chunks with exact evals and checkpoints, summarize.

    train_and_evaluate(cfg)
      setup       corpus, floors, mesh, state (fresh or restored), device data, the compiled chunk
      train_loop  chunks of steps until max_iters; evals, checkpoints and stop signals between chunks
      summarize   summary.json and the lecture's closing sample
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax import checkpoint as ckpt_lib
from bigram_jax import evaluate, memory, parallel, programs, run_dir
from bigram_jax.config import Config
from bigram_jax.corpus import Corpus, load_corpus
from bigram_jax.errors import Interrupted, NonFinite, UserError
from bigram_jax.feed import HostFeed
from bigram_jax.model import params_of, table_of
from bigram_jax.progress import Progress
from bigram_jax.run_dir import RunDir
from bigram_jax.summary import summarize
from bigram_jax.train import DRAW_STEPS, TrainState, init_on, init_state, learning_rate, train_steps


@dataclasses.dataclass
class Job:
    """Everything the loop needs, built once by `setup`."""

    cfg: Config
    corpus: Corpus
    mesh: Any
    checkpoints: ckpt_lib.Checkpoints
    state: TrainState
    advance: Callable  # (state, step, n) -> (state, sum of the n batch losses): compiled once
    feed: HostFeed | None  # the host's window gatherer, when the corpus stays on the host
    counts: dict  # each split's transition counts on the device(s), for exact evaluation
    floors: dict  # the best losses any bigram table reaches
    corpus_s: float  # seconds to load the corpus (its streaming pass, or the cache)
    compile_s: float
    say: Callable  # print, in the process that speaks for all (process 0); a no-op elsewhere

    def exact(self, params: Any) -> tuple[float, float]:
        """Exact (train, val) losses over every position of each split."""
        return tuple(evaluate.exact(params, self.counts[s]) for s in ("train", "val"))


@dataclasses.dataclass(frozen=True)
class Trained:
    """What the loop ends with."""

    state: TrainState
    losses: tuple[float, float]  # exact (train, val) at the last step
    start_step: int  # where this run started (0, or the resumed checkpoint's step)
    seconds: dict  # where the loop's time went: train (inside the compiled chunks), eval, checkpoints


def train_and_evaluate(cfg: Config, resume: ckpt_lib.Resume | None = None, tensorboard: bool = False,
                       started: float | None = None) -> dict:
    """Train from scratch (or from `resume`) to cfg.max_iters; returns the summary.

    `started`: time.time() when the process began its work (the CLI's import), to report the time before this.
    """
    t_start = time.perf_counter()
    before = time.time() - started if started is not None else None
    job = setup(cfg, resume)
    try:
        # the run's handlers stay until the checkpoints are closed: a signal never cuts a save short
        with RunDir(job.cfg, int(job.state.step), parallel.is_primary(), tensorboard, t_start) as run, job.checkpoints:
            trained = train_loop(job, run)
        # every checkpoint is on disk now, and a stop signal stops the closing sample at once
        return summarize(job, trained, run, before)
    finally:
        if job.feed is not None:
            job.feed.close()


def setup(cfg: Config, resume: ckpt_lib.Resume | None) -> Job:
    """Load the corpus, build the mesh, restore or create the state, put the data on the devices, compile."""
    t0 = time.perf_counter()
    corpus = load_corpus(cfg)
    corpus_s = time.perf_counter() - t0
    V = corpus.tokenizer.vocab_size
    say = print if parallel.is_primary() else (lambda *a, **k: None)  # one process speaks for all
    mesh = parallel.make_mesh(cfg, V)
    if cfg.top_k > V:
        raise UserError(f"top_k {cfg.top_k} is more than the vocabulary ({V})")
    home = memory.data_home(cfg, len(corpus.train), V, mesh)
    memory.check_fits(memory.run_bytes(cfg, V, mesh, len(corpus.train) if home == "device" else 0, DRAW_STEPS))
    if resume is None:  # the run folder: named, or the next numbered one; locked for the run's life
        cfg = dataclasses.replace(cfg, out_dir=cfg.out_dir or str(run_dir.next_run(run_dir.RUNS)))
        if parallel.is_primary():
            run_dir.claim(Path(cfg.out_dir), fresh=True)
    else:
        ckpt_lib.check_compatible(resume, corpus, say)
    checkpoints = resume.checkpoints if resume is not None else ckpt_lib.open_fresh(cfg)
    try:
        state = _initial_state(cfg, V, mesh, resume, say)
        say(f"backend: {jax.default_backend()} | devices: {', '.join(str(d) for d in jax.devices())}")
        say(parallel.describe(mesh))
        say(f"data: {corpus.path} ({len(corpus.train):,} train / {len(corpus.val):,} val tokens, vocab {V})")
        floor_t = evaluate.floor_train(corpus.train_counts)
        floor_v, alpha = evaluate.floor_val(corpus.train_counts, corpus.val_counts)
        say(f"floor: train loss {floor_t:.4f} (count table), val loss {floor_v:.4f} "
            f"(train counts, add-{alpha:.3g} smoothing)")
        dtype = table_of(state.params).dtype
        counts = {s: evaluate.device_counts(c, dtype, lambda x: parallel.replicate(x, mesh))
                  for s, c in (("train", corpus.train_counts), ("val", corpus.val_counts))}
        t0 = time.perf_counter()
        advance, feed = _place_data(cfg, corpus, state, mesh, home, say)
    except BaseException:
        checkpoints.close()
        raise
    floors = {"floor_train_loss": floor_t, "floor_val_loss": floor_v, "floor_val_alpha": alpha}
    return Job(cfg, corpus, mesh, checkpoints, state, advance, feed, counts, floors, corpus_s,
               time.perf_counter() - t0, say)


def _place_data(cfg: Config, corpus: Corpus, state: TrainState, mesh: Any, home: str, say: Callable
                ) -> tuple[Callable, HostFeed | None]:
    """The training tokens on the device(s) (`home` 'device'), or left on the host and fed; compiled once."""
    if cfg.data_on == "auto" and home == "host":
        say(f"data: {len(corpus.train):,} train tokens stay on the host (memory-mapped), fed a block at a time")
    if home == "host":
        feed = HostFeed(corpus, cfg, state, mesh)
        return feed.advance, feed
    train_data = parallel.replicate(np.asarray(corpus.train, np.int32), mesh)
    # compiled ahead of time, once: the step count is a traced argument, so every chunk reuses it
    compiled = programs.compiled(train_steps, state, train_data, np.int32(1), out=(state, 0.0), profile="loop",
                                 cfg=cfg, mesh=mesh)
    return (lambda st, step, n: compiled(st, train_data, np.int32(n))), None


def _initial_state(cfg: Config, V: int, mesh: Any, resume: ckpt_lib.Resume | None, say: Callable) -> TrainState:
    """The latest checkpoint's state restored into this mesh's shardings, or a fresh one created in place."""
    # shapes and structure only: a (V, V) table stands in for flax's init, which would be traced for nothing
    abstract = jax.eval_shape(lambda: init_state(cfg, V, params_of(jax.ShapeDtypeStruct((V, V), jnp.float32))))
    if resume is not None:  # any mesh can resume any checkpoint: orbax lands each shard on its device
        target, ckpts = parallel.abstract_on(abstract, mesh), resume.checkpoints
        try:
            state = ckpts.restore_state(resume.step, target, resume.meta)
        except UserError as e:  # never a silent fall-back to an older step: say which one is intact
            raise UserError(f"{e}; {ckpts.newest_intact(resume.step, target)}") from None
        say(f"resumed from {resume.checkpoints.directory / str(resume.step)} (step {resume.step})")
        return state
    return programs.run(init_on, out=abstract, profile="once", cfg=cfg, vocab_size=V, mesh=mesh)


CHECKPOINT_SECONDS = 60.0  # checkpoint_every = 0: at an eval once this long has passed since the last save


@dataclasses.dataclass
class Clock:
    """The loop's running figures between evals, and where its time went."""

    start: int  # the step this run started from
    loss_sum: float = 0.0  # batch losses since the last eval
    since: int = 0  # steps since the last eval
    window_s: float = 0.0  # training seconds since the last eval
    seconds: dict = dataclasses.field(default_factory=lambda: {"train": 0.0, "eval": 0.0, "checkpoints": 0.0})
    last_save: float = dataclasses.field(default_factory=time.monotonic)


def train_loop(job: Job, run: RunDir) -> Trained:
    """Run chunks of steps to cfg.max_iters; eval, log and checkpoint at their steps; stop on a signal.

    Each chunk ends at the next eval or checkpoint step and lasts about cfg.chunk_seconds, so a SIGTERM or
    SIGINT is honoured within about that time. The host syncs once per chunk, never per step.
    """
    cfg, state = job.cfg, job.state
    step = int(state.step)
    clock = Clock(step)
    lr = lambda s: float(programs.run(learning_rate, np.int32(s), out=0.0, profile="once", cfg=cfg))  # noqa: E731
    losses = job.exact(state.params)
    if step == 0:  # a resumed run logged its starting step before it stopped
        run.log_eval(step, *losses, batch_loss=None, lr=lr(step))
    chunk = min(64, cfg.eval_interval)
    ends = [cfg.eval_interval, cfg.max_iters] + ([cfg.checkpoint_every] if cfg.checkpoint_every else [])
    with Progress(cfg.max_iters, step, enabled=run.primary) as bar:
        while step < cfg.max_iters:
            n = min(min(_next(step, e) for e in ends) - step, chunk)  # chunks end at evals and checkpoints
            t = time.perf_counter()
            state, chunk_loss = job.advance(state, step, n)
            chunk_loss = float(chunk_loss)  # one sync per chunk, for the clock and the signal check
            dt = time.perf_counter() - t
            if not math.isfinite(chunk_loss):  # nothing of this chunk is logged or saved
                last = job.checkpoints.mgr.latest_step()
                kept = "no checkpoint was written" if last is None else f"the last checkpoint (step {last}) is finite"
                raise NonFinite(f"the loss became non-finite between steps {step} and {step + n}; {kept}: "
                                "try a lower --learning-rate, or --grad-clip")
            step += n
            clock.loss_sum, clock.since, clock.window_s = clock.loss_sum + chunk_loss, clock.since + n, clock.window_s + dt
            clock.seconds["train"] += dt
            at_eval = step % cfg.eval_interval == 0 or step == cfg.max_iters
            # every process runs the same steps and saves at the same ones: they agree on all three
            stop, chunk, at_ckpt = parallel.agree(run.stop_signal, max(1, int(n * cfg.chunk_seconds / max(dt, 1e-6))),
                                                  _checkpoint_due(cfg, step, at_eval, clock.last_save))
            bar.update(step, (step - clock.start) * cfg.batch_size * cfg.block_size / clock.seconds["train"])
            job.checkpoints.check()  # a failed async save stops the run at the next chunk, not the next save
            if at_eval or at_ckpt or stop:
                losses = _eval_and_save(job, run, state, clock, lr(step - 1), at_eval, at_ckpt or stop)
            if stop:
                raise Interrupted(stop, step)
    return Trained(state, losses, clock.start, clock.seconds)


def _eval_and_save(job: Job, run: RunDir, state: TrainState, clock: Clock, lr: float, log: bool,
                   save: bool) -> tuple[float, float]:
    """Exact losses of `state`; logged (an eval step) and/or checkpointed with them."""
    cfg, step, t = job.cfg, int(state.step), time.perf_counter()
    losses = job.exact(state.params)
    if log:
        run.log_eval(step, *losses, batch_loss=clock.loss_sum / clock.since, lr=lr,
                     tokens_per_second=clock.since * cfg.batch_size * cfg.block_size / max(clock.window_s, 1e-9))
        clock.loss_sum, clock.since, clock.window_s = 0.0, 0, 0.0
    clock.seconds["eval"] += time.perf_counter() - t
    if save:
        t = time.perf_counter()
        job.checkpoints.save(state, ckpt_lib.make_meta(cfg, job.corpus, *losses), losses[1])
        clock.last_save = time.monotonic()
        clock.seconds["checkpoints"] += time.perf_counter() - t
    return losses


def _checkpoint_due(cfg: Config, step: int, at_eval: bool, last_save: float) -> bool:
    """Save now? At the last step always; every checkpoint_every steps; or, for 0, at an eval once
    CHECKPOINT_SECONDS have passed since the last save (a short run saves once, a long one once a minute)."""
    if step == cfg.max_iters:
        return True
    if cfg.checkpoint_every:
        return step % cfg.checkpoint_every == 0
    return at_eval and time.monotonic() - last_save >= CHECKPOINT_SECONDS


def _next(step: int, every: int) -> int:
    """The first multiple of `every` after `step` (for max_iters: itself, once it is ahead)."""
    return (step // every + 1) * every
