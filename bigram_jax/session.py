"""A run's side effects: the out-dir (config, metrics), checkpoints, resume checks and stop signals."""
from __future__ import annotations

import json
import signal
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

from bigram_jax import parallel
from bigram_jax.config import FIELDS, Config, UserError, make_config
from bigram_jax.corpus import Corpus

# settings of the machine a run happens to use, not of the run: a resumed run does not inherit them
MACHINE_KEYS = ("out_dir", "model_parallel")
# settings that change what a resumed run computes; other keys (max_iters, out_dir, ...) may change freely
RESULT_KEYS = ("batch_size", "block_size", "learning_rate", "weight_decay", "beta1", "beta2", "eps",
               "lr_schedule", "warmup_iters", "min_lr", "grad_clip", "loss", "seed", "train_frac", "val_data")


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int):
        super().__init__(signum, step)
        self.signum, self.step = signum, step


def _versions() -> dict[str, str]:
    """Library versions, recorded in each checkpoint."""
    out = {}
    for name in ("bigram-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def resume_config(overrides: dict[str, Any]) -> tuple[Config, dict]:
    """The config to resume with: the latest checkpoint's config, with `overrides` applied on top."""
    from bigram_jax import checkpoint as ckpt  # orbax is imported only when checkpoints are used

    directory = ckpt.run_checkpoint_dir(overrides.get("out_dir", Config.out_dir))
    if not directory.is_dir():
        raise UserError(f"--resume: no checkpoints in {directory}; run without --resume to start fresh")
    mgr = ckpt.open_manager(directory, read_only=True)
    try:
        meta = ckpt.read_meta(mgr, ckpt.pick_step(mgr, None))
    finally:
        mgr.close()
    # where it runs is this machine's business: out_dir and the device layout are not inherited
    base = make_config({k: v for k, v in meta["config"].items() if k not in MACHINE_KEYS})
    return make_config(overrides, base), meta


class Session:
    """Owns the out-dir, the device mesh, the checkpoint manager and the signal handlers; a context manager.

    Every process of a multi-process run opens one (orbax writes each process's shards); only process 0
    writes config.json, metrics.jsonl and TensorBoard events.
    """

    def __init__(self, cfg: Config, corpus: Corpus, resume: bool = False, allow_mismatch: bool = False,
                 checkpoint_meta: dict | None = None, tensorboard: bool = False, mesh: Any = None):
        from bigram_jax import checkpoint as ckpt

        self.cfg, self.corpus, self.ckpt = cfg, corpus, ckpt
        self.mesh = mesh if mesh is not None else parallel.make_mesh(cfg, corpus.tokenizer.vocab_size)
        self.primary = parallel.is_primary()
        self.t_start = time.perf_counter()
        self.stop_signal = 0
        self.out_dir = Path(cfg.out_dir)
        # not checkpoint_dir's guess from what exists: several processes must agree before any has written
        directory = ckpt.run_checkpoint_dir(self.out_dir)
        if not resume and directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir()):
            raise UserError(f"{self.out_dir} already holds checkpoints: pass --resume to continue them, "
                            "or choose another --out-dir (nothing was changed)")
        self.state = None
        if resume:
            self._check_compatible(checkpoint_meta or {}, allow_mismatch)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.mgr = ckpt.open_manager(directory, keep=cfg.keep_checkpoints)
        if resume:
            try:
                self.state = self._restore_latest()
            except BaseException:
                self.mgr.close()
                raise
        self.tb = None
        if not self.primary:
            return
        self._trim_metrics(int(self.state.step) if self.state is not None else 0)
        (self.out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if tensorboard:
            from bigram_jax.tblog import TensorBoardLogger

            start = int(self.state.step) if self.state is not None else 0
            self.tb = TensorBoardLogger(self.out_dir / "tensorboard", start_step=start)

    def _restore_latest(self) -> Any:
        """The full train state of the latest checkpoint."""
        from bigram_jax.train import init_state

        step = self.ckpt.pick_step(self.mgr, None)
        abstract = jax.eval_shape(lambda: init_state(self.cfg, self.corpus.tokenizer.vocab_size))
        # restored straight into this run's shardings: any mesh can resume any checkpoint
        state = self.ckpt.restore_state(self.mgr, step, parallel.abstract_on(abstract, self.mesh))
        if self.primary:
            print(f"resumed from {self.mgr.directory / str(step)} (step {step})")
        return state

    def _check_compatible(self, meta: dict, allow_mismatch: bool) -> None:
        """Refuse to resume a checkpoint made for another vocabulary or data file (unless allowed)."""
        vocab, V = self.corpus.tokenizer.vocab, self.corpus.tokenizer.vocab_size
        had = meta.get("vocab_size") or len(meta.get("vocab") or "")
        if had != V:
            raise UserError(f"checkpoint table is {had}x{had} but this data has a vocabulary of {V}: "
                            "it cannot be resumed on this data")
        problems = []
        if meta.get("vocab") != vocab:
            problems.append("vocabulary differs")
        if meta.get("data_sha256") != self.corpus.sha256:
            problems.append(f"data file differs (sha256 {str(meta.get('data_sha256'))[:12]}... vs {self.corpus.sha256[:12]}...)")
        if problems and not allow_mismatch:
            raise UserError(f"checkpoint does not match this run: {'; '.join(problems)}; "
                            "pass --allow-mismatch to resume anyway (nothing was changed)")
        # a key the checkpoint predates had its default then
        changed = [k for k in RESULT_KEYS if meta["config"].get(k, FIELDS[k].default) != getattr(self.cfg, k)]
        if (changed or problems) and self.primary:
            print(f"note: resuming with changes ({', '.join(problems + changed)}): "
                  "the result will differ from an uninterrupted run", file=sys.stderr)

    def _trim_metrics(self, step: int) -> None:
        """Drop metric rows past `step`: an interrupted run may have logged beyond its last checkpoint."""
        path = self.out_dir / "metrics.jsonl"
        if step == 0:
            path.write_text("")
        elif path.exists():
            rows = [r for r in path.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= step]
            path.write_text("".join(r + "\n" for r in rows))

    def meta(self, train_loss: float, val_loss: float) -> dict:
        """The JSON metadata stored with each checkpoint."""
        return {"config": self.cfg.to_dict(), "vocab": self.corpus.tokenizer.vocab,
                "vocab_size": self.corpus.tokenizer.vocab_size,
                "data_sha256": self.corpus.sha256, "data_path": str(self.corpus.path),
                "train_loss": train_loss, "val_loss": val_loss, "versions": _versions()}

    def log_eval(self, step: int, train_loss: float, val_loss: float, batch_loss: float | None, lr: float,
                 tokens_per_second: float | None = None) -> None:
        """Print the lecture's line and append a row to metrics.jsonl (and TensorBoard, if on); process 0 only."""
        if not self.primary:
            return
        print(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}", flush=True)
        row = {"step": step, "train_loss": train_loss, "val_loss": val_loss, "batch_loss": batch_loss,
               "lr": lr, "tokens_per_second": tokens_per_second,
               "elapsed_seconds": round(time.perf_counter() - self.t_start, 4)}
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            self.tb.log_eval(step, row)

    def save(self, state: Any, train_loss: float, val_loss: float) -> None:
        """Checkpoint `state` (async; finished in close())."""
        self.ckpt.save(self.mgr, state, self.meta(train_loss, val_loss), val_loss)

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Ask the loop to stop after its current chunk."""
        self.stop_signal = signum

    def __enter__(self) -> Session:
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.tb is not None:
                self.tb.close()
            self.mgr.wait_until_finished()  # orbax drops an unfinished async save at interpreter exit
            self.mgr.close()
        finally:
            for s, h in self._old.items():
                signal.signal(s, h)
