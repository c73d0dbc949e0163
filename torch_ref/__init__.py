"""torch_ref: the lecture's bigram.py in PyTorch, the reference that bigram_jax is checked against.

`torch_ref.model` needs only torch (so a benchmark of it pays no JAX start-up); `torch_ref.parity`
imports both and runs the parity checks (`python -m torch_ref.parity`).
"""
