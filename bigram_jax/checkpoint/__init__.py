"""Checkpoints: save, restore and resume, through one orbax manager per run; params-only loading for samplers.

A checkpoint holds the full train state (step, params, AdamW state, data key) and JSON metadata: the config
that made it, the vocabulary, the data file's identity, its exact losses, the library versions and the
checksums of its arrays.
"""
from bigram_jax.checkpoint.load import Checkpoint, load_checkpoint
from bigram_jax.checkpoint.manager import Checkpoints, checkpoint_dir, open_fresh, run_checkpoint_dir
from bigram_jax.checkpoint.resume import (MACHINE_KEYS, RESULT_KEYS, Resume, check_compatible, make_meta,
                                          open_resume)

__all__ = ["MACHINE_KEYS", "RESULT_KEYS", "Checkpoint", "Checkpoints", "Resume", "check_compatible",
           "checkpoint_dir", "load_checkpoint", "make_meta", "open_fresh", "open_resume", "run_checkpoint_dir"]
