"""Orbax checkpoints: the full train state plus JSON metadata; params-only loading for samplers."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from bigram_jax.config import UserError
from bigram_jax.data import CharTokenizer, TokenIds, tokenizer_for
from bigram_jax.model import BigramLanguageModel

logging.getLogger("absl").setLevel(logging.ERROR)  # orbax logs every save, and read-only notes, through absl


def checkpoint_dir(path: str | Path) -> Path:
    """Absolute checkpoints folder for an out-dir or a checkpoints folder (orbax needs absolute paths)."""
    p = Path(path).expanduser().resolve()
    return p / "checkpoints" if (p / "checkpoints").is_dir() or not p.exists() or _is_out_dir(p) else p


def run_checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a training run keeps its checkpoints: OUT_DIR/checkpoints, absolute, whatever exists yet."""
    return Path(out_dir).expanduser().resolve() / "checkpoints"


def _is_out_dir(p: Path) -> bool:
    """An out-dir holds config.json or summary.json beside (or instead of) checkpoints/."""
    return (p / "config.json").exists() or (p / "summary.json").exists()


def open_manager(directory: Path, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
    """A manager keeping the latest `keep` checkpoints and, separately, the one with the best val loss."""
    policy = ocm.AnyPreservationPolicy([
        ocm.LatestN(n=keep),
        # reverse=True sorts descending, so the kept "last" one is the lowest val loss
        ocm.BestN(get_metric_fn=lambda m: m["val_loss"], reverse=True, n=1),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=None if read_only else policy, best_fn=lambda m: m["val_loss"], best_mode="min",
        read_only=read_only, create=not read_only, cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(directory, options=options)


def save(mgr: ocp.CheckpointManager, state: Any, meta: dict, val_loss: float) -> bool:
    """Start an async save of `state` + `meta` at state.step; False if that step is already saved."""
    step = int(state.step)
    if step in mgr.all_steps():
        return False
    # copy: the live state's buffers are donated to the next train call while orbax still writes
    state = jax.tree.map(lambda a: a.copy(), state)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    return mgr.save(step, args=args, metrics={"val_loss": float(val_loss)})


def _fail(directory: Path, step: int, e: BaseException) -> UserError:
    """A one-line error for an unreadable checkpoint."""
    msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return UserError(f"checkpoint at step {step} in {directory} is unreadable ({type(e).__name__}: {msg})")


def read_meta(mgr: ocp.CheckpointManager, step: int) -> dict:
    """The JSON metadata of one checkpoint."""
    try:
        meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        raise _fail(mgr.directory, step, e) from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise UserError(f"checkpoint at step {step} in {mgr.directory} has no valid metadata")
    if not isinstance(meta.get("vocab"), str):  # token-id runs record only the size
        if not isinstance(meta.get("vocab_size"), int) or meta["vocab_size"] < 1:
            raise UserError(f"checkpoint at step {step} in {mgr.directory} has no valid metadata")
        meta["vocab"] = None
    meta.setdefault("vocab_size", len(meta["vocab"] or ""))
    return meta


def restore_state(mgr: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
    """The full train state of one checkpoint, restored into the types of `abstract_state`."""
    try:
        return mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))).state
    except Exception as e:
        raise _fail(mgr.directory, step, e) from None


def pick_step(mgr: ocp.CheckpointManager, step: int | None) -> int:
    """`step`, checked to exist, or the latest finalized step."""
    steps = mgr.all_steps()
    if not steps:
        raise UserError(f"no checkpoint found in {mgr.directory}")
    if step is None:
        return max(steps)
    if step not in steps:
        raise UserError(f"no checkpoint at step {step} in {mgr.directory} (have: {', '.join(map(str, sorted(steps)))})")
    return step


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
    mgr = open_manager(directory, read_only=True)
    try:
        step = pick_step(mgr, step)
        meta = read_meta(mgr, step)
        V = meta["vocab_size"]
        model = BigramLanguageModel(V)
        abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
        item = {"params": abstract}
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)
        try:
            restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=item, restore_args=restore_args, partial_restore=True))).state
        except Exception as e:
            raise _fail(directory, step, e) from None
        params = jax.tree.map(jnp.asarray, restored["params"])
        return Checkpoint(params=params, step=step, vocab=meta["vocab"], config=meta["config"], meta=meta)
    finally:
        mgr.close()
