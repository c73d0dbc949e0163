"""bigram-jax: the bigram character model of Karpathy's "Let's build GPT", in JAX/Flax.

The public names are imported on first use, so `--help` and flag errors answer without loading JAX.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"BigramLanguageModel": "bigram_jax.model", "CharTokenizer": "bigram_jax.corpus.tokenizers",
          "Config": "bigram_jax.config", "UserError": "bigram_jax.errors", "generate": "bigram_jax.sampling",
          "load_checkpoint": "bigram_jax.checkpoint.load", "load_corpus": "bigram_jax.corpus.load",
          "train_and_evaluate": "bigram_jax.run.job"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """`bigram_jax.X`: imported from its module the first time it is asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module 'bigram_jax' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
