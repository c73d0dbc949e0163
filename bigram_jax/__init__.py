"""bigram-jax: the bigram character model of Karpathy's "Let's build GPT", in JAX/Flax."""
from __future__ import annotations

from typing import Any

from bigram_jax.config import Config, UserError
from bigram_jax.data import CharTokenizer
from bigram_jax.generate import generate
from bigram_jax.model import BigramLanguageModel

__all__ = ["BigramLanguageModel", "CharTokenizer", "Config", "UserError", "generate", "load_checkpoint"]


def __getattr__(name: str) -> Any:
    """Import orbax only when checkpoints are used (it costs start-up time)."""
    if name == "load_checkpoint":
        from bigram_jax.checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'bigram_jax' has no attribute {name!r}")
