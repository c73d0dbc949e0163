"""Run configuration: one typed dataclass, loaded from a file and/or CLI flags, validated once."""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal

from bigram_jax.errors import UserError


def _field(default: Any, help: str) -> Any:
    """A config field with its help text beside it (the CLI turns each field into a --flag)."""
    return dataclasses.field(default=default, metadata={"help": help})


Loss = Literal["auto", "counts", "gather"]
Schedule = Literal["constant", "cosine"]
Home = Literal["auto", "device", "host"]


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of a run. Defaults are the lecture's bigram.py."""

    # data
    data: str = _field("tinyshakespeare", "UTF-8 text file, token ids (.bin uint16 as nanoGPT's prepare.py, or "
                       ".npy), or 'tinyshakespeare' ($BIGRAM_JAX_DATA, cache, else download)")
    val_data: str = _field("", "separate validation token-id file (then --data is all train); default: split --data")
    vocab_size: int = _field(0, "V of token-id data (e.g. 50304, GPT-2's padded); 0 = largest id + 1")
    compact_vocab: bool = _field(False, "the table covers only the ids the corpus uses (train and val): the same "
                                 "model, with zero probability on ids it never holds; e.g. GPT-2 BPE shakespeare "
                                 "uses 11,706 of 50,257 ids. Sampling and export map rows back to the tokenizer's ids")
    train_frac: float = _field(0.9, "fraction of the corpus, from the start, used for training (not with --val-data): "
                               "of the tokens; for a text read with a BPE tokenizer, of its characters, each part "
                               "encoded on its own (nanoGPT's prepare.py)")
    tokenizer: str = _field("auto", "text <-> ids: auto (a text's own characters; for token-id data the meta.pkl "
                            "beside it, as nanoGPT, else none) | chars | none (raw ids) | a tiktoken encoding (gpt2, "
                            "r50k_base, p50k_base, cl100k_base, o200k_base) | a path to a tokenizer.json or a "
                            "nanoGPT meta.pkl")
    # batches
    batch_size: int = _field(32, "B, sequences per batch")
    block_size: int = _field(8, "T, characters per sequence")
    # optimisation: AdamW with torch's defaults, as the lecture
    max_iters: int = _field(3000, "train until this step")
    learning_rate: float = _field(1e-2, "AdamW peak learning rate")
    weight_decay: float = _field(0.01, "AdamW decoupled weight decay (torch's default; optax's is 1e-4)")
    beta1: float = _field(0.9, "AdamW beta1")
    beta2: float = _field(0.999, "AdamW beta2")
    eps: float = _field(1e-8, "AdamW epsilon")
    lr_schedule: Schedule = _field("constant", "constant | cosine (linear warmup, then cosine decay to --min-lr)")
    warmup_iters: int = _field(0, "warmup steps of the cosine schedule")
    min_lr: float = _field(0.0, "final learning rate of the cosine schedule")
    grad_clip: float = _field(0.0, "clip gradients to this global norm; 0 = off")
    loss: Loss = _field("auto", "counts (V x V sufficient statistics, O(V^2)) | gather (the textbook loss, "
                        "O(B*T*V)) | auto (counts if V <= B*T and V^2 < 2^31); equal values")
    seed: int = _field(1337, "seeds the table, the batches and the sample")
    # devices
    model_parallel: int = _field(0, "shard the table's rows (and AdamW moments) over N devices; 0 = auto "
                                 "(only when it would not fit one)")
    data_on: Home = _field("auto", "where the training tokens live: device (a copy on every device) | host "
                           "(memory-mapped; each step's windows gathered on the host and fed) | auto (device when "
                           "the copy fits the device's budget; on CPU, up to 64M tokens); the same batches")
    # evaluation, logging, sampling
    eval_interval: int = _field(300, "exact train/val loss every N steps")
    chunk_seconds: float = _field(0.25, "wall time of one fused chunk of steps (bounds the reaction to "
                                  "SIGTERM/SIGINT)")
    sample_tokens: int = _field(500, "characters sampled at the end; 0 = none")
    temperature: float = _field(1.0, "sampling temperature")
    top_k: int = _field(0, "sample only from the k most likely characters; 0 = off")
    out_dir: str = _field("", "where the run writes; default: a new folder runs/bigram/version_N (sample.py, "
                          "plot.py and --resume then take the newest)")
    # checkpoints
    checkpoint_every: int = _field(0, "checkpoint every N steps; 0 = at an eval once a minute has passed since "
                                   "the last checkpoint (and always at the last step, and on SIGTERM/SIGINT)")
    keep_checkpoints: int = _field(3, "latest checkpoints kept (plus the best)")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return dataclasses.asdict(self)

    def for_vocab(self, vocab_size: int) -> Config:
        """The config a run of this vocabulary computes with: loss 'auto' decided, here and nowhere else."""
        return dataclasses.replace(self, loss=resolve_loss(self.loss, vocab_size, self.batch_size, self.block_size))


def resolve_loss(name: str, vocab_size: int, batch_size: int, block_size: int) -> str:
    """'auto' -> the cheaper implementation: counts cost O(V^2) per step, gather O(B*T*V), so counts iff V <= B*T."""
    if name == "auto":  # (counts' pair ids are int32: past V = 46,340 it is gather whatever the batch)
        name = "counts" if vocab_size <= batch_size * block_size and vocab_size * vocab_size < 2**31 else "gather"
    if name == "counts" and vocab_size * vocab_size >= 2**31:
        raise UserError(f"loss 'counts' needs V^2 < 2^31 (int32 pair ids); V = {vocab_size}: use --loss gather or auto")
    return name


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
# where files are, where the tokens live, when to evaluate, save and sample: read by the job, never inside a
# compiled program, so a saved program serves runs that differ only in these (tests/compile/test_program_key.py checks)
RUN_ONLY = frozenset({"data", "val_data", "train_frac", "tokenizer", "compact_vocab", "data_on", "eval_interval", "chunk_seconds",
                      "sample_tokens", "temperature", "top_k", "out_dir", "checkpoint_every", "keep_checkpoints"})
_HINTS = typing.get_type_hints(Config)
# the Python type of each field's values, and the allowed values of the Literal ones
TYPES = {name: type(typing.get_args(h)[0]) if typing.get_origin(h) is Literal else h for name, h in _HINTS.items()}
CHOICES = {name: typing.get_args(h) for name, h in _HINTS.items() if typing.get_origin(h) is Literal}


def from_flag(name: str, text: str) -> Any:
    """A command-line value (always text) as the field's type; make_config then checks it like a file's."""
    kind = TYPES[name]
    if kind is str:
        return text
    if kind is bool:  # a switch: --compact-vocab alone, or nanoGPT's --compact_vocab=True
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise UserError(f"{name} is a switch: give it alone, or =true / =false, got {text!r}")
    try:
        return int(text) if kind is int else float(text)
    except ValueError:
        raise UserError(f"{name} must be {'an' if kind is int else 'a'} {kind.__name__}, got {text!r}") from None


def _coerce(name: str, value: Any) -> Any:
    """A value from a file (or a typed flag) as the field's type, or UserError: a string is not a number here,
    so a JSON "32" for batch_size is refused as the README says."""
    kind = TYPES[name]
    try:
        if kind is int and not isinstance(value, (bool, str)):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float and not isinstance(value, (bool, str)):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
        if kind is bool and isinstance(value, bool):
            return value
    except (TypeError, ValueError, OverflowError):
        pass
    if kind is bool:
        raise UserError(f"{name} must be true or false, got {value!r}")
    raise UserError(f"{name} must be {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}")


def make_config(overrides: dict[str, Any], base: Config | None = None) -> Config:
    """Build a validated Config from `base` and overrides; unknown keys are an error."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise UserError(f"unknown config key(s): {', '.join(unknown)}")
    values = {k: _coerce(k, v) for k, v in overrides.items()}
    cfg = dataclasses.replace(base or Config(), **values)
    validate(cfg)
    return cfg


INT32_MAX = 2**31 - 1  # steps, batch shapes and token ids are int32 inside the compiled programs


def validate(cfg: Config) -> None:
    """Raise UserError on the first setting that cannot work."""
    for name, kind in TYPES.items():
        if kind is int and getattr(cfg, name) > INT32_MAX and name != "seed":
            raise UserError(f"{name} must be at most 2**31 - 1, got {getattr(cfg, name)}")
    for name in ("batch_size", "block_size", "eval_interval", "keep_checkpoints"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(cfg, name)}")
    for name in ("max_iters", "sample_tokens", "warmup_iters", "checkpoint_every", "top_k", "vocab_size",
                 "model_parallel"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("learning_rate", "weight_decay", "beta1", "beta2", "eps", "min_lr", "grad_clip",
                 "temperature", "chunk_seconds", "train_frac"):
        v = getattr(cfg, name)
        if not math.isfinite(v):
            raise UserError(f"{name} must be a finite number, got {v}")
        if v < 0:
            raise UserError(f"{name} must be >= 0, got {v}")
    if cfg.learning_rate == 0:
        raise UserError("learning_rate must be positive")
    if not 0 <= cfg.beta1 < 1 or not 0 <= cfg.beta2 < 1:
        raise UserError("beta1 and beta2 must be in [0, 1)")
    if cfg.temperature == 0:
        raise UserError("temperature must be positive")
    if not 0 < cfg.train_frac < 1:
        raise UserError(f"train_frac must be in (0, 1), got {cfg.train_frac}")
    if cfg.min_lr > cfg.learning_rate:
        raise UserError(f"min_lr ({cfg.min_lr}) must not exceed learning_rate ({cfg.learning_rate})")
    if cfg.warmup_iters > cfg.max_iters and cfg.lr_schedule == "cosine":
        raise UserError(f"warmup_iters ({cfg.warmup_iters}) must not exceed max_iters ({cfg.max_iters})")
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise UserError(f"{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")
    if cfg.val_data and not cfg.val_data.endswith((".bin", ".npy")):
        raise UserError(f"val_data must be a token-id file (.bin or .npy), got {cfg.val_data!r}")
    if not 0 <= cfg.seed < 2**32:  # jax.random.key keeps only the low 32 bits without x64
        raise UserError(f"seed must be in [0, 2**32), got {cfg.seed}")
    _validate_optimizer(cfg)


def _validate_optimizer(cfg: Config) -> None:
    """AdamW settings that would turn the table into NaN, or that float32 would round into such values."""
    import numpy as np  # (light: numpy only, no JAX)

    if cfg.eps <= 0:
        raise UserError(f"eps must be positive (it keeps AdamW's division finite), got {cfg.eps}")
    for name in ("beta1", "beta2"):
        v = getattr(cfg, name)
        if 0 <= v < 1 <= np.float32(v):
            raise UserError(f"{name} {v} rounds to 1.0 in float32: at most {float(np.nextafter(np.float32(1), 0))}")
    if cfg.learning_rate * cfg.weight_decay >= 1:
        raise UserError(f"learning_rate x weight_decay must be below 1 (each step multiplies the table by "
                        f"1 - their product), got {cfg.learning_rate * cfg.weight_decay:g}")
