"""Checkpoints: save, restore and resume, through one orbax manager per run; params-only loading for samplers.

A checkpoint holds the full train state (step, params, AdamW state, data key) and JSON metadata: the config
that made it, the vocabulary, the data file's identity, its exact losses and the library versions.
"""
from __future__ import annotations

import dataclasses
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from bigram_jax.config import FIELDS, Config, make_config
from bigram_jax.data import CharTokenizer, TokenIds, tokenizer_for
from bigram_jax.errors import UserError
from bigram_jax.model import BigramLanguageModel

logging.getLogger("absl").setLevel(logging.ERROR)  # orbax logs every save, and read-only notes, through absl

# settings of the machine a run happens to use, not of the run: a resumed run does not inherit them
MACHINE_KEYS = ("out_dir", "model_parallel", "data_on")
# settings that change what a resumed run computes; other keys (max_iters, out_dir, ...) may change freely
RESULT_KEYS = ("batch_size", "block_size", "learning_rate", "weight_decay", "beta1", "beta2", "eps",
               "lr_schedule", "warmup_iters", "min_lr", "grad_clip", "loss", "seed", "train_frac", "val_data")


def checkpoint_dir(path: str | Path) -> Path:
    """Absolute checkpoints folder for an out-dir or a checkpoints folder (orbax needs absolute paths)."""
    p = Path(path).expanduser().resolve()
    is_out_dir = (p / "config.json").exists() or (p / "summary.json").exists()
    return p / "checkpoints" if (p / "checkpoints").is_dir() or not p.exists() or is_out_dir else p


def run_checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a training run keeps its checkpoints: OUT_DIR/checkpoints, absolute, whatever exists yet."""
    return Path(out_dir).expanduser().resolve() / "checkpoints"


class Checkpoints:
    """One orbax manager over a checkpoints folder: keeps the latest `keep` and the best val loss.

    A context manager: leaving it finishes pending async saves (orbax drops them at interpreter exit).
    """

    def __init__(self, directory: Path, keep: int = 3, read_only: bool = False):
        self.directory = directory
        self._latest = ocm.LatestN(n=keep)
        policy = ocm.AnyPreservationPolicy([
            self._latest,
            # reverse=True sorts descending, so the kept "last" one is the lowest val loss
            ocm.BestN(get_metric_fn=lambda m: m["val_loss"], reverse=True, n=1),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=None if read_only else policy, best_fn=lambda m: m["val_loss"], best_mode="min",
            read_only=read_only, create=not read_only, cleanup_tmp_directories=not read_only)
        self.mgr = ocp.CheckpointManager(directory, options=options)

    def set_keep(self, keep: int) -> None:
        """Keep the latest `keep` from now on (a resumed run's config may say another number)."""
        self._latest.n = keep

    def pick(self, step: int | None = None) -> int:
        """`step`, checked to exist, or the latest finalized step."""
        steps = self.mgr.all_steps()
        if not steps:
            raise UserError(f"no checkpoint found in {self.directory}")
        if step is None:
            return max(steps)
        if step not in steps:
            raise UserError(f"no checkpoint at step {step} in {self.directory} "
                            f"(have: {', '.join(map(str, sorted(steps)))})")
        return step

    def _restore(self, step: int, **args: Any) -> Any:
        """mgr.restore of some items, with any failure of a damaged checkpoint as one UserError."""
        try:
            return self.mgr.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise UserError(f"checkpoint at step {step} in {self.directory} is unreadable "
                            f"({type(e).__name__}: {msg})") from None

    def read_meta(self, step: int) -> dict:
        """The JSON metadata of one checkpoint, checked."""
        meta = self._restore(step, meta=ocp.args.JsonRestore()).meta
        bad = UserError(f"checkpoint at step {step} in {self.directory} has no valid metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise bad
        if not isinstance(meta.get("vocab"), str):  # token-id runs record only the size
            if not isinstance(meta.get("vocab_size"), int) or meta["vocab_size"] < 1:
                raise bad
            meta["vocab"] = None
        meta.setdefault("vocab_size", len(meta["vocab"] or ""))
        return meta

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """The full train state of one checkpoint, restored into the types (and shardings) of `abstract_state`."""
        return self._restore(step, state=ocp.args.StandardRestore(abstract_state)).state

    def restore_params(self, step: int, vocab_size: int) -> Any:
        """Only the params of one checkpoint (not the optimizer): what a sampler needs."""
        model = BigramLanguageModel(vocab_size)
        item = {"params": jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))}
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)
        restored = self._restore(step, state=ocp.args.PyTreeRestore(
            item=item, restore_args=restore_args, partial_restore=True)).state
        return jax.tree.map(jnp.asarray, restored["params"])

    def save(self, state: Any, meta: dict, val_loss: float) -> bool:
        """Start an async save of `state` + `meta` at state.step; False if that step is already saved."""
        step = int(state.step)
        if step in self.mgr.all_steps():
            return False
        # copy: the live state's buffers are donated to the next train call while orbax still writes
        state = jax.tree.map(lambda a: a.copy(), state)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self.mgr.save(step, args=args, metrics={"val_loss": float(val_loss)})

    def close(self) -> None:
        """Finish pending saves, then release the manager."""
        try:
            self.mgr.wait_until_finished()
        finally:
            self.mgr.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_fresh(cfg: Config) -> Checkpoints:
    """The checkpoints of a new run in cfg.out_dir; refused if that folder already holds checkpoints."""
    directory = run_checkpoint_dir(cfg.out_dir)
    # not checkpoint_dir's guess from what exists: several processes must agree before any has written
    if directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir()):
        raise UserError(f"{cfg.out_dir} already holds checkpoints: pass --resume to continue them, "
                        "or choose another --out-dir (nothing was changed)")
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    return Checkpoints(directory, keep=cfg.keep_checkpoints)


@dataclasses.dataclass
class Resume:
    """What a resumed run starts from: the config to resume with, and the latest checkpoint's step and metadata."""

    cfg: Config
    checkpoints: Checkpoints  # the run's one manager: it restores here, then saves the resumed run's steps
    step: int
    meta: dict
    allow_mismatch: bool = False


def open_resume(overrides: dict[str, Any], allow_mismatch: bool = False) -> Resume:
    """Open OUT_DIR/checkpoints once; the config is the latest checkpoint's, with `overrides` on top."""
    directory = run_checkpoint_dir(overrides.get("out_dir", Config.out_dir))
    if not directory.is_dir():
        raise UserError(f"--resume: no checkpoints in {directory}; run without --resume to start fresh")
    ckpts = Checkpoints(directory)
    try:
        step = ckpts.pick()
        meta = ckpts.read_meta(step)
        # where it runs is this machine's business: out_dir and the device layout are not inherited
        base = make_config({k: v for k, v in meta["config"].items() if k not in MACHINE_KEYS})
        cfg = make_config(overrides, base)
    except BaseException:
        ckpts.close()
        raise
    ckpts.set_keep(cfg.keep_checkpoints)
    return Resume(cfg, ckpts, step, meta, allow_mismatch)


def check_compatible(resume: Resume, corpus: Any, say: Any = print) -> None:
    """Refuse to resume a checkpoint made for another vocabulary or data file (unless allowed)."""
    meta, cfg = resume.meta, resume.cfg
    vocab, V = corpus.tokenizer.vocab, corpus.tokenizer.vocab_size
    had = meta.get("vocab_size") or len(meta.get("vocab") or "")
    if had != V:
        raise UserError(f"checkpoint table is {had}x{had} but this data has a vocabulary of {V}: "
                        "it cannot be resumed on this data")
    problems = []
    if meta.get("vocab") != vocab:
        problems.append("vocabulary differs")
    if meta.get("data_sha256") != corpus.sha256:
        problems.append(f"data file differs (sha256 {str(meta.get('data_sha256'))[:12]}... vs "
                        f"{corpus.sha256[:12]}...)")
    if problems and not resume.allow_mismatch:
        raise UserError(f"checkpoint does not match this run: {'; '.join(problems)}; "
                        "pass --allow-mismatch to resume anyway (nothing was changed)")
    # a key the checkpoint predates had its default then
    changed = [k for k in RESULT_KEYS if meta["config"].get(k, FIELDS[k].default) != getattr(cfg, k)]
    if changed or problems:
        say(f"note: resuming with changes ({', '.join(problems + changed)}): "
            "the result will differ from an uninterrupted run")


def _versions() -> dict[str, str]:
    """Library versions, recorded in each checkpoint."""
    out = {}
    for name in ("bigram-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def make_meta(cfg: Config, corpus: Any, train_loss: float, val_loss: float) -> dict:
    """The JSON metadata stored with each checkpoint: the checkpoint carries its config."""
    return {"config": cfg.to_dict(), "vocab": corpus.tokenizer.vocab, "vocab_size": corpus.tokenizer.vocab_size,
            "data_sha256": corpus.sha256, "data_path": str(corpus.path),
            "train_loss": train_loss, "val_loss": val_loss, "versions": _versions()}


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What a sampler needs from a checkpoint: params, step, vocabulary and the config that built it."""

    params: Any
    step: int
    vocab: str | None  # the characters of a text run; None for token ids
    config: dict
    meta: dict

    @property
    def tokenizer(self) -> CharTokenizer | TokenIds:
        """The tokenizer the run was trained with."""
        return tokenizer_for(self.vocab, self.meta["vocab_size"])


def load_checkpoint(path: str | Path, step: int | None = None) -> Checkpoint:
    """Load params (not the optimizer) of checkpoint `step` (None = latest) from an out-dir or its checkpoints folder."""
    directory = checkpoint_dir(path)
    if not directory.is_dir():
        raise UserError(f"checkpoint directory not found: {directory}")
    with Checkpoints(directory, read_only=True) as ckpts:
        step = ckpts.pick(step)
        meta = ckpts.read_meta(step)
        params = ckpts.restore_params(step, meta["vocab_size"])
    return Checkpoint(params=params, step=step, vocab=meta["vocab"], config=meta["config"], meta=meta)
