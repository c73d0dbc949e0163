"""Checkpoints: save, restore and resume, through one orbax manager per run; params-only loading for samplers.

A checkpoint holds the full train state (step, params, AdamW state, data key) and JSON metadata: the config
that made it, the vocabulary, the data file's identity, its exact losses, the library versions and the
checksums of its arrays.
"""
