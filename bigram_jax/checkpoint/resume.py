"""Resuming a run: the config to resume with, the compatibility check, and each checkpoint's metadata."""
from __future__ import annotations

import dataclasses
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from bigram_jax.checkpoint.manager import Checkpoints, run_checkpoint_dir
from bigram_jax.config import FIELDS, Config, make_config, resolve_loss
from bigram_jax.corpus.token_file import TOKEN_SUFFIXES
from bigram_jax.corpus.tokenizers import describe_record, record_identity
from bigram_jax.devices import parallel
from bigram_jax.errors import UserError
from bigram_jax.store import run_folders

# settings of the machine a run happens to use, not of the run: a resumed run does not inherit them
MACHINE_KEYS = ("out_dir", "model_parallel", "data_on")
# settings that change what a resumed run computes; other keys (max_iters, out_dir, ...) may change freely
RESULT_KEYS = ("batch_size", "block_size", "learning_rate", "weight_decay", "beta1", "beta2", "eps",
               "lr_schedule", "warmup_iters", "min_lr", "grad_clip", "loss", "seed", "train_frac", "val_data")


@dataclasses.dataclass
class Resume:
    """What a resumed run starts from: the config to resume with, and the latest checkpoint's step and metadata."""

    cfg: Config
    checkpoints: Checkpoints  # the run's one manager: it restores here, then saves the resumed run's steps
    step: int
    meta: dict
    allow_mismatch: bool = False
    lock: IO | None = None  # the run folder's lock (process 0): train_and_evaluate releases it when the run ends

    def close(self) -> None:
        """Release what the resume holds (for a Resume that is not handed to train_and_evaluate)."""
        self.checkpoints.close()
        if self.lock is not None:
            self.lock.close()


def open_resume(overrides: dict[str, Any], allow_mismatch: bool = False) -> Resume:
    """Lock OUT_DIR and open its checkpoints once; the config is the latest checkpoint's, with `overrides` on top.
    Creates nothing: a folder that holds no run is refused as it is."""
    out_dir = Path(overrides["out_dir"])
    if not run_folders.holds_run(out_dir):  # (nothing else is resumed: a typo'd or relative path from elsewhere)
        raise UserError(f"--resume: there is no run in {out_dir} "
                        f"({'no such folder' if not out_dir.exists() else 'none of its files are there'}); "
                        "nothing was created")
    lock = run_folders.claim(out_dir, fresh=False) if parallel.is_primary() else None
    try:
        return _open(overrides, allow_mismatch, lock)
    except BaseException:
        if lock is not None:
            lock.close()
        raise


def _open(overrides: dict[str, Any], allow_mismatch: bool, lock: IO | None) -> Resume:
    """open_resume, once the folder is locked."""
    out_dir = overrides["out_dir"]
    directory = run_checkpoint_dir(out_dir)
    ckpts = Checkpoints(directory) if directory.is_dir() else None
    if ckpts is None or not ckpts.mgr.all_steps():
        if ckpts is not None:
            ckpts.close()
        raise UserError(f"--resume: {out_dir} holds no checkpoint (the run stopped before its first one): "
                        "delete that folder, or choose another --out-dir, to start fresh")
    try:
        step = ckpts.pick()
        meta = _meta_or_say_which(ckpts, step)
        # where it runs is this machine's business: out_dir and the device layout are not inherited
        base = make_config({k: v for k, v in meta["config"].items() if k not in MACHINE_KEYS})
        cfg = make_config(overrides, base)
        if cfg.max_iters < step:
            raise UserError(f"--resume: the checkpoint is at step {step}, past --max-iters {cfg.max_iters}: "
                            "nothing to train (raise --max-iters)")
    except BaseException:
        ckpts.close()
        raise
    ckpts.set_keep(cfg.keep_checkpoints)
    return Resume(cfg, ckpts, step, meta, allow_mismatch, lock)


def _meta_or_say_which(ckpts: Checkpoints, step: int) -> dict:
    """The latest checkpoint's metadata; if it is damaged, an error that names the newest readable step."""
    try:
        return ckpts.read_meta(step)
    except UserError as e:
        for older in sorted((s for s in ckpts.mgr.all_steps() if s < step), reverse=True):
            try:
                ckpts.read_meta(older)
            except UserError:
                continue
            raise UserError(f"{e}; step {older} is intact: move {ckpts.directory / str(step)} aside to resume "
                            "from it") from None
        raise


def check_compatible(resume: Resume, corpus: Any, say: Any = print) -> None:
    """Refuse to resume a checkpoint made for another tokenizer, vocabulary or data file (unless allowed)."""
    meta, cfg, V = resume.meta, resume.cfg, corpus.vocab_size
    problems, notes = [], []
    old_id, new_id = record_identity(meta.get("tokenizer"), meta.get("vocab")), corpus.tokenizer.identity
    if old_id != new_id:
        what = _tokenizer_change(describe_record(meta.get("tokenizer"), meta.get("vocab")), old_id,
                                 corpus.tokenizer.describe(), new_id, (meta.get("tokenizer") or {}).get("source"))
        # token-id data keeps its ids whatever decodes them: adding or dropping a tokenizer changes only the text
        token_data = corpus.path.suffix in TOKEN_SUFFIXES
        (notes if token_data and "ids" in (old_id, new_id) else problems).append(what)
    old_rows, new_rows = (meta.get("tokenizer") or {}).get("id_map"), getattr(corpus.tokenizer, "ids", None)
    if (old_rows is None) != (new_rows is None) or (new_rows is not None and list(old_rows) != new_rows.tolist()):
        # a compact table's row r stands for id_map[r]: other ids give the rows other tokens
        problems.append("the table's rows stand for other token ids (--compact-vocab: the corpus uses other ids)")
    had = meta.get("vocab_size") or len(meta.get("vocab") or "")
    if had != V:
        raise UserError(f"{''.join(p + '; ' for p in problems)}checkpoint table is {had}x{had} but this data has a "
                        f"vocabulary of {V}: it cannot be resumed on this data")
    if meta.get("data_sha256") != corpus.sha256:
        problems.append(f"data file differs (sha256 {str(meta.get('data_sha256'))[:12]}... vs "
                        f"{corpus.sha256[:12]}...)")
    if problems and not resume.allow_mismatch:
        raise UserError(f"checkpoint does not match this run: {'; '.join(problems)}; "
                        "pass --allow-mismatch to resume anyway (nothing was changed)")
    # a key the checkpoint predates had its default then
    had_cfg = {k: meta["config"].get(k, FIELDS[k].default) for k in RESULT_KEYS}
    had_cfg["loss"] = resolve_loss(had_cfg["loss"], V, had_cfg["batch_size"], had_cfg["block_size"])  # 'auto' as it ran
    changed = [k for k in RESULT_KEYS if had_cfg[k] != getattr(cfg.for_vocab(V), k)]
    if changed or problems:
        say(f"note: resuming with changes ({', '.join(problems + changed)}): "
            "the result will differ from an uninterrupted run")
    for n in notes:
        say(f"note: {n}: the same ids, decoded from now on with {corpus.tokenizer.describe()}")


def _tokenizer_change(old: str, old_id: str, new: str, new_id: str, source: str | None) -> str:
    """What changed between the checkpoint's tokenizer and this run's, in words: where both are described alike
    (the same file, rewritten since), the digests are what differs."""
    if old != new:
        return f"tokenizer differs ({old} vs {new})"
    what = f"the tokenizer file {source}" if source else f"the tokenizer {old}"
    return f"{what} changed since the checkpoint (digest {old_id[:12]}... -> {new_id[:12]}...)"


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
    """The JSON metadata stored with each checkpoint: the checkpoint carries its config and its tokenizer (`vocab`:
    the characters of a character table, for readers of older versions; None otherwise)."""
    return {"config": cfg.to_dict(), "tokenizer": corpus.tokenizer.record(),
            "vocab": getattr(corpus.tokenizer, "vocab", None), "vocab_size": corpus.vocab_size,
            "data_sha256": corpus.sha256, "data_path": str(corpus.path),
            "train_loss": train_loss, "val_loss": val_loss, "versions": _versions()}
