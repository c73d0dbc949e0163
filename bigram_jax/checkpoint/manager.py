"""One orbax manager per run: save (async, with checksums), restore (checked), and where checkpoints live."""
from __future__ import annotations

import contextlib
import ctypes
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

with warnings.catch_warnings():  # orbax 0.12 names a sharding class that jax 0.12 deprecates: its warning, not ours
    warnings.filterwarnings("ignore", message=r"jax\.sharding\.SingleDeviceSharding is deprecated",
                            category=DeprecationWarning)
    import orbax.checkpoint as ocp
    from orbax.checkpoint import checkpoint_managers as ocm

from bigram_jax.checkpoint import quiet
from bigram_jax.checkpoint.integrity import checksums, meta_is_intact, seal_meta, verify
from bigram_jax.compile import programs
from bigram_jax.config import Config
from bigram_jax.errors import UserError, first_line
from bigram_jax.model import BigramLanguageModel


IN_PLACE_BYTES = 256 << 20  # a state on the CPU this big is saved from its own buffers, the run waiting


def saved_in_place(state: Any) -> bool:
    """Whether to save `state` from its own buffers and wait for the write, not from a copy written while training
    goes on: on the CPU the copy is host memory, beside the state, the step's work and orbax's writing (a
    11,706-row table: 1.5 GB more at the peak of a run); a save then costs its write time, once a minute at most."""
    leaves = jax.tree.leaves(state)
    on_cpu = all(d.platform == "cpu" for x in leaves if isinstance(x, jax.Array) for d in x.devices())
    return on_cpu and sum(x.nbytes for x in leaves if hasattr(x, "nbytes")) >= IN_PLACE_BYTES


def _trim_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim). orbax's writer threads leave about
    2/3 of what they wrote free but held in their heaps (measured: 1.0 GB after saving a 1.5 GB state), which the
    run never uses again; elsewhere (another C library) nothing is done."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


@jax.jit
def copy_state(state: Any) -> Any:
    """A copy of every array of `state`, as one program (an eager copy per leaf would load one per dtype)."""
    return jax.tree.map(jnp.copy, state)


def checkpoint_dir(path: str | Path) -> Path:
    """Absolute checkpoints folder for an out-dir or a checkpoints folder (orbax needs absolute paths)."""
    p = Path(path).expanduser().resolve()
    is_out_dir = (p / "config.json").exists() or (p / "summary.json").exists()
    return p / "checkpoints" if (p / "checkpoints").is_dir() or not p.exists() or is_out_dir else p


def run_checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a training run keeps its checkpoints: OUT_DIR/checkpoints, absolute, whatever exists yet."""
    return Path(out_dir).expanduser().resolve() / "checkpoints"


class _Manager(ocp.CheckpointManager):
    """orbax's manager, but a step whose metrics file is damaged is read as one without metrics.

    Opening a manager reads every step's metrics; orbax lets a damaged one raise there, which would make every
    intact step unreachable too. The step itself stays loadable (its arrays are checked on load)."""

    def metrics(self, step: int) -> Any:
        try:
            return super().metrics(step)
        except Exception:  # noqa: BLE001  (orbax raises JSON and file errors of many kinds)
            return None


class Checkpoints:
    """One orbax manager over a checkpoints folder: keeps the latest `keep` and the best val loss.

    A context manager: leaving it finishes pending async saves (orbax drops them at interpreter exit).
    """

    def __init__(self, directory: Path, keep: int = 3, read_only: bool = False):
        self.directory = directory
        self._closed = False
        quiet.mute(True)  # until close (orbax logs from here on: these options, every save and restore)
        self._latest = ocm.LatestN(n=keep)
        policy = ocm.AnyPreservationPolicy([
            self._latest,
            # reverse=True sorts descending, so the kept "last" one is the lowest val loss
            ocm.BestN(get_metric_fn=lambda m: m["val_loss"], reverse=True, n=1),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=None if read_only else policy, best_fn=lambda m: m["val_loss"], best_mode="min",
            read_only=read_only, create=not read_only, cleanup_tmp_directories=not read_only)
        try:
            self.mgr = _Manager(directory, options=options)
        except Exception as e:  # noqa: BLE001
            quiet.mute(False)
            raise UserError(f"cannot open the checkpoints in {directory} ({first_line(e)})") from None

    def set_keep(self, keep: int) -> None:
        """Keep the latest `keep` from now on (a resumed run's config may say another number)."""
        self._latest.n = keep

    def pick(self, step: int | None = None) -> int:
        """`step`, checked to exist, or the latest finalized step."""
        if step is not None and (isinstance(step, bool) or np.ndim(step) != 0 or np.asarray(step).dtype.kind not in "iu"):
            raise UserError(f"step must be an integer, got {step!r}")
        step = None if step is None else int(step)
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
            raise UserError(f"checkpoint at step {step} in {self.directory} is unreadable ({first_line(e)})") from None

    def read_meta(self, step: int) -> dict:
        """The JSON metadata of one checkpoint, checked (its own checksum, then its shape)."""
        meta = self._restore(step, meta=ocp.args.JsonRestore()).meta
        bad = UserError(f"checkpoint at step {step} in {self.directory} has no valid metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise bad
        if not meta_is_intact(meta):
            raise UserError(f"checkpoint at step {step} in {self.directory} has damaged metadata: it fails its "
                            "checksum (edited, or corrupted)")
        if not isinstance(meta.get("tokenizer", {}), dict):
            raise bad
        if not isinstance(meta.get("vocab"), str):  # runs of other tokenizers record only the size
            if not isinstance(meta.get("vocab_size"), int) or meta["vocab_size"] < 1:
                raise bad
            meta["vocab"] = None
        meta.setdefault("vocab_size", len(meta["vocab"] or ""))
        return meta

    def restore_state(self, step: int, abstract_state: Any, meta: dict) -> Any:
        """The full train state of one checkpoint, restored into the types (and shardings) of `abstract_state`,
        its arrays checked against the checksums in `meta`."""
        state = self._restore(step, state=ocp.args.StandardRestore(abstract_state)).state
        verify(state, meta.get("checksums"), f"checkpoint at step {step} in {self.directory}")
        return state

    def newest_intact(self, below: int, abstract_state: Any) -> str:
        """What to tell a user whose checkpoint `below` is damaged: the newest older step that is intact."""
        for step in sorted((s for s in self.mgr.all_steps() if s < below), reverse=True):
            try:
                self.restore_state(step, abstract_state, self.read_meta(step))
            except UserError:
                continue
            return f"step {step} is intact: move {self.directory / str(below)} aside to resume from it"
        return "no older checkpoint is intact"

    def restore_params(self, step: int, vocab_size: int, meta: dict) -> Any:
        """Only the params of one checkpoint (not the optimizer): what a sampler needs; checked."""
        model = BigramLanguageModel(vocab_size)
        item = {"params": jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))}
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)
        restored = self._restore(step, state=ocp.args.PyTreeRestore(
            item=item, restore_args=restore_args, partial_restore=True)).state
        params = jax.tree.map(jnp.asarray, restored["params"])
        verify(params, meta.get("checksums"), f"checkpoint at step {step} in {self.directory}", prefix=".params")
        return params

    def save(self, state: Any, meta: dict, val_loss: float) -> bool:
        """Start an async save of `state` + `meta` at state.step; False if that step is already saved."""
        step = int(state.step)
        if step in self.mgr.all_steps():
            return False
        with self._failure(None):  # orbax waits for the previous save anyway: its failure is named as its own
            self.mgr.wait_until_finished()
        meta = seal_meta({**meta, "checksums": checksums(state)})  # both verified by every restore and load
        in_place = saved_in_place(state)
        if not in_place:  # a copy: the live state's buffers are donated to the next train call while orbax writes
            state = programs.run(copy_state, state, out=state, profile="once")
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        with self._failure(step):
            saved = self.mgr.save(step, args=args, metrics={"val_loss": float(val_loss)})
            if in_place:  # written before the buffers go back to training
                self.mgr.wait_until_finished()
                _trim_heap()
            return saved

    @contextlib.contextmanager
    def _failure(self, step: int | None):
        """A failed save (a full disk, a folder gone read-only) as one UserError that stops the run."""
        try:
            yield
        except Exception as e:  # noqa: BLE001  (orbax re-raises its writer threads' errors in many types)
            what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
            good = self.mgr.latest_step()
            raise UserError(f"cannot save {what} ({first_line(e)}); the last good checkpoint is "
                            f"{'none' if good is None or good == step else f'step {good}'}") from None

    def check(self) -> None:
        """Raise now if an earlier async save failed (called after every chunk: a failed save stops the run)."""
        with self._failure(None):
            self.mgr.check_for_errors()

    def close(self) -> None:
        """Finish pending saves, then release the manager (once: later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._failure(None):
                self.mgr.wait_until_finished()
        finally:
            try:
                self.mgr.close()
            finally:
                quiet.mute(False)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_fresh(cfg: Config) -> Checkpoints:
    """The checkpoints of a new run in cfg.out_dir (run_dir.claim has made sure it holds no run)."""
    # not checkpoint_dir's guess from what exists: several processes must agree before any has written
    return Checkpoints(run_checkpoint_dir(cfg.out_dir), keep=cfg.keep_checkpoints)
