"""The training job, top to bottom: set up, train in fused chunks with exact evals and checkpoints, summarize.

    train_and_evaluate(cfg)
      setup       corpus, floors, mesh, state (fresh or restored), device data, the compiled chunk
      train_loop  chunks of steps until max_iters; evals, checkpoints and stop signals between chunks
      summarize   summary.json and the lecture's closing sample
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax import evaluate
from bigram_jax.checkpoint.manager import Checkpoints, open_fresh
from bigram_jax.checkpoint.resume import Resume, check_compatible, make_meta
from bigram_jax.compile import programs
from bigram_jax.config import Config
from bigram_jax.corpus import compact
from bigram_jax.corpus.load import Corpus, load_corpus
from bigram_jax.devices import memory, parallel
from bigram_jax.errors import Interrupted, NonFinite, UserError
from bigram_jax.model import params_of, table_of
from bigram_jax.run import pacing
from bigram_jax.run.feed import HostFeed
from bigram_jax.run.progress import Progress
from bigram_jax.run.run_dir import RunDir
from bigram_jax.run.signals import StopRequests
from bigram_jax.run.summary import summarize
from bigram_jax.store import run_folders
from bigram_jax.train import (
    DRAW_STEPS,
    TrainState,
    init_on,
    init_state,
    learning_rate,
    train_steps,
)


@dataclasses.dataclass
class Job:
    """Everything the loop needs, built once by `setup`."""

    cfg: Config
    corpus: Corpus
    mesh: Any
    checkpoints: Checkpoints
    state: TrainState
    advance: Callable  # (state, step, n) -> (state, the n batch losses on the host): compiled once
    counts: dict  # each split's transition counts on the device(s), for exact evaluation
    floors: dict  # the best losses any bigram table reaches
    corpus_s: float  # seconds to load the corpus (its streaming pass, or the cache)
    compile_s: float
    say: Callable  # print, in the process that speaks for all (process 0); a no-op elsewhere

    def exact(self, params: Any) -> tuple[float, float]:
        """Exact (train, val) losses over every position of each split."""
        return tuple(evaluate.exact(params, self.counts[s], programs.run) for s in ("train", "val"))


@dataclasses.dataclass(frozen=True)
class Trained:
    """What the loop ends with."""

    state: TrainState
    losses: tuple[float, float]  # exact (train, val) at the last step
    start_step: int  # where this run started (0, or the resumed checkpoint's step)
    seconds: dict  # where the loop's time went: train (inside the compiled chunks), eval, checkpoints


def train_and_evaluate(cfg: Config, resume: Resume | None = None, tensorboard: bool = False,
                       started: float | None = None) -> dict:
    """Train from scratch (or from `resume`) to cfg.max_iters; returns the summary.

    `started`: time.time() when the process began its work (the CLI's import), to report the time before this.
    """
    t_start = time.perf_counter()
    before = time.time() - started if started is not None else None
    with contextlib.ExitStack() as held:  # the folder's lock, the checkpoints, the feed: let go however the run ends
        if resume is not None:
            held.callback(resume.close)
        job = setup(cfg, resume, held)
        # the run's handlers stay until the checkpoints are closed: a signal never cuts a save short
        with RunDir(job.cfg, int(job.state.step), parallel.is_primary(), tensorboard, t_start) as run, \
                StopRequests() as stops, job.checkpoints:
            trained = train_loop(job, run, stops)
        # a stop that came after the loop's last look (its last save, closing the checkpoints): no closing sample
        stop = parallel.agree(stops.signum, 1, False)[0]  # one decision for every process
        if stop:
            raise Interrupted(stop, int(trained.state.step))
        # every checkpoint is on disk now, and a stop signal stops the closing sample at once
        return summarize(job, trained, run, before)


def setup(cfg: Config, resume: Resume | None, held: contextlib.ExitStack) -> Job:
    """Load the corpus, build the mesh, restore or create the state, put the data on the devices, compile.
    What must be let go when the run ends (the run folder's lock, the checkpoints, the feed) goes to `held`."""
    if resume is None and cfg.out_dir and parallel.is_primary():  # before the corpus (its encoding may take
        run_folders.check_fresh(Path(cfg.out_dir))  # minutes); by the process that claims the folder, as claim
    t0 = time.perf_counter()
    corpus = load_corpus(cfg)
    corpus_s = time.perf_counter() - t0
    V = corpus.vocab_size
    cfg = cfg.for_vocab(V)  # loss 'auto' decided once: everything below reads cfg.loss
    say = print if parallel.is_primary() else (lambda *a, **k: None)  # one process speaks for all
    if resume is not None:
        check_compatible(resume, corpus, say)
    say(f"backend: {jax.default_backend()} | devices: {', '.join(str(d) for d in jax.devices())}")
    say(corpus.describe())
    floors = _floors(corpus, say)  # what the corpus is comes first, then whether its table fits
    mesh, home = _fitting_mesh(cfg, corpus)
    say(parallel.describe(mesh))
    if cfg.top_k > V:
        raise UserError(f"top_k {cfg.top_k} is more than the vocabulary ({V})")
    if resume is None:  # the run folder: named, or the next numbered one; locked for the run's life
        cfg = dataclasses.replace(cfg, out_dir=cfg.out_dir or str(run_folders.next_run(run_folders.RUNS)))
        if parallel.is_primary():
            held.callback(run_folders.claim(Path(cfg.out_dir), fresh=True).close)
        checkpoints = held.enter_context(open_fresh(cfg))
    else:
        checkpoints = resume.checkpoints
    state = _initial_state(cfg, V, mesh, resume, say)
    dtype = table_of(state.params).dtype
    counts = {s: evaluate.device_counts(c, dtype, lambda x: parallel.replicate(x, mesh))
              for s, c in (("train", corpus.train_counts), ("val", corpus.val_counts))}
    t0 = time.perf_counter()
    advance, feed = _place_data(cfg, corpus, state, mesh, home, say)
    if feed is not None:
        held.callback(feed.close)
    return Job(cfg, corpus, mesh, checkpoints, state, advance, counts, floors, corpus_s,
               time.perf_counter() - t0, say)


def _floors(corpus: Corpus, say: Callable) -> dict:
    """The best losses any bigram table reaches on this corpus, said in the `floor:` line."""
    floor_t = evaluate.floor_train(corpus.train_counts)
    floor_v, alpha = evaluate.floor_val(corpus.train_counts, corpus.val_counts)
    alpha_text = np.format_float_positional(alpha, precision=3, fractional=False, trim="-")  # never 1e+03
    say(f"floor: train loss {floor_t:.4f} (count table), val loss {floor_v:.4f} "
        f"(train counts, add-{alpha_text} smoothing)")
    return {"floor_train_loss": floor_t, "floor_val_loss": floor_v, "floor_val_alpha": alpha}


def _fitting_mesh(cfg: Config, corpus: Corpus) -> tuple[Any, str]:
    """(the mesh, where the corpus lives), or one line that says the table does not fit; for a table over a
    tokenizer's whole vocabulary, the line says what the ids the corpus uses would need (--compact-vocab)."""
    V = corpus.vocab_size
    if corpus.rows is not None and cfg.model_parallel and V % cfg.model_parallel:  # (--vocab-size cannot pad it)
        raise UserError(f"model_parallel {cfg.model_parallel} must divide the vocabulary size {V}: a --compact-vocab "
                        f"table has a row for each id the corpus uses; give a model_parallel that divides {V:,}")
    try:
        mesh = parallel.make_mesh(cfg, V)
        home, parts = memory.plan(cfg, len(corpus.train), V, mesh, DRAW_STEPS)
        memory.check_fits(parts)
        return mesh, home
    except UserError as e:
        if corpus.rows is not None or "needs about" not in str(e):
            raise
        raise UserError(f"{e}{_compact_hint(cfg, corpus)}") from None


def _compact_hint(cfg: Config, corpus: Corpus) -> str:
    """'; this corpus uses N of the V ids: --compact-vocab ...' for a refusal of the whole table ('' if the
    compact table's own plan fails: the refusal stays the table's)."""
    V, Vc = corpus.vocab_size, len(compact.used_ids(corpus.train_counts, corpus.val_counts))
    small = cfg.for_vocab(Vc)
    try:
        need = sum(memory.run_bytes(small, Vc, parallel.make_mesh(small, Vc), 0, DRAW_STEPS).values())
    except UserError:
        return ""
    return (f"; this corpus uses {Vc:,} of the {V:,} ids: --compact-vocab trains a {Vc:,}x{Vc:,} table over "
            f"those, about {_amount(need)}")


def _amount(n: float) -> str:
    """Bytes in words: '1.6 GiB', '2.1 MiB'."""
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


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

    def advance(st: TrainState, step: int, n: int) -> tuple[TrainState, np.ndarray]:
        st, losses = compiled(st, train_data, np.int32(n))
        return st, np.asarray(losses)[:n]  # the chunk's one sync

    return advance, None


def _initial_state(cfg: Config, V: int, mesh: Any, resume: Resume | None, say: Callable) -> TrainState:
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


def train_loop(job: Job, run: RunDir, stops: StopRequests) -> Trained:
    """Run chunks of steps to cfg.max_iters; eval, log and checkpoint at their steps; stop on a signal.

    Each chunk ends at the next eval or checkpoint step and lasts about cfg.chunk_seconds, so a SIGTERM or
    SIGINT is honoured within about that time. The host syncs once per chunk, never per step.
    """
    cfg, state = job.cfg, job.state
    step = int(state.step)
    clock = pacing.Clock(step)
    lr = lambda s: float(programs.run(learning_rate, np.int32(s), out=0.0, profile="once", cfg=cfg))  # noqa: E731
    losses = job.exact(state.params)
    if step == 0:  # a resumed run logged its starting step before it stopped
        run.log_eval(step, *losses, batch_loss=None, lr=lr(step))
    chunk = min(64, cfg.eval_interval)
    with Progress(cfg.max_iters, step, enabled=run.primary) as bar:
        while step < cfg.max_iters:
            n = min(pacing.chunk_end(step, cfg) - step, chunk)  # chunks end at evals and checkpoints
            t = time.perf_counter()
            state, batch_losses = job.advance(state, step, n)  # one sync per chunk: the clock, the signal check
            dt = time.perf_counter() - t
            _check_finite(job, batch_losses, step)  # nothing of a non-finite chunk is logged or saved
            step += n
            clock.add(batch_losses, dt)
            at_eval = step % cfg.eval_interval == 0 or step == cfg.max_iters
            # every process runs the same steps and saves at the same ones: they agree on all three
            stop, chunk, at_ckpt = parallel.agree(stops.signum, pacing.chunk_after(n, dt, cfg),
                                                  pacing.checkpoint_due(cfg, step, at_eval, clock.last_save))
            bar.update(step, (step - clock.start) * cfg.batch_size * cfg.block_size / clock.seconds["train"])
            job.checkpoints.check()  # a failed async save stops the run at the next chunk, not the next save
            if at_eval or at_ckpt or stop:
                losses = _eval_and_save(job, run, state, clock, lr(step - 1), at_eval, at_ckpt or stop)
            if stop:
                raise Interrupted(stop, step)
    return Trained(state, losses, clock.start, clock.seconds)


def _eval_and_save(job: Job, run: RunDir, state: TrainState, clock: pacing.Clock, lr: float, log: bool,
                   save: bool) -> tuple[float, float]:
    """Exact losses of `state`; logged (an eval step) and/or checkpointed with them."""
    cfg, step, t = job.cfg, int(state.step), time.perf_counter()
    losses = job.exact(state.params)
    if log:
        batch_loss, tokens_per_second = clock.take(cfg.batch_size * cfg.block_size)
        run.log_eval(step, *losses, batch_loss=batch_loss, lr=lr, tokens_per_second=tokens_per_second)
    clock.seconds["eval"] += time.perf_counter() - t
    if save:
        t = time.perf_counter()
        job.checkpoints.save(state, make_meta(cfg, job.corpus, *losses), losses[1])
        clock.last_save = time.monotonic()
        clock.seconds["checkpoints"] += time.perf_counter() - t
    return losses


def _check_finite(job: Job, losses: np.ndarray, step: int) -> None:
    """Raise NonFinite, naming the first step whose batch loss is NaN or infinite (losses[i] is step + i's)."""
    bad = ~np.isfinite(losses)
    if bad.any():
        last = job.checkpoints.mgr.latest_step()
        kept = "no checkpoint was written" if last is None else f"the last checkpoint (step {last}) is finite"
        raise NonFinite(f"the loss became non-finite at step {step + int(np.argmax(bad))}; {kept}: "
                        "try a lower --learning-rate, or --grad-clip")
