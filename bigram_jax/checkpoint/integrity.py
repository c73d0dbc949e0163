"""Checksums of a checkpoint: of its arrays (any flipped bit in a saved array is found when it is loaded), and of
its JSON metadata (an edited config, vocabulary or size is found too).

Each leaf's checksum is the sum of its 32-bit words modulo 2**32, computed on the device(s) where the arrays
live (one small reduction per leaf, one transfer of the sums). A single flipped bit changes one word by a power
of two, so it always changes the sum. The sums travel in the checkpoint's JSON metadata, keyed by leaf path; the
metadata carries the sha256 of its own canonical JSON (sorted keys, no spaces) under META_CHECKSUM.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax.compile import programs
from bigram_jax.errors import UserError
from bigram_jax.store import cache


def _words(x: jax.Array) -> jax.Array:
    """The sum of an array's 32-bit words (16- and 8-bit ones widened), uint32, wrapping."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    size = jnp.dtype(x.dtype).itemsize
    if size < 4:
        x = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size]).astype(jnp.uint32)
    else:  # 4 bytes: one word; 8 bytes: two (a trailing axis of 2)
        x = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.sum(x, dtype=jnp.uint32)


@jax.jit
def word_sums(arrays: list) -> list:
    """_words of every array, as one program (kept between runs by programs.py: a warm run on a GPU or TPU, whose
    checkpoints are summed on the device, compiles nothing at its first save or load)."""
    return [_words(x) for x in arrays]


def _host_words(x: jax.Array) -> int:
    """_words of an array in host memory, by numpy on a zero-copy view (3.5x XLA:CPU's reduction here)."""
    a = np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
    a = np.ascontiguousarray(a).reshape(-1)
    words = a.view(np.uint32) if a.dtype.itemsize % 4 == 0 else a.view(f"u{a.dtype.itemsize}").astype(np.uint32)
    return int(words.sum(dtype=np.uint32))


def _in_host_memory(arrays: list) -> bool:
    """Does this process hold every array whole, in host memory (the CPU backend)?"""
    return all(x.is_fully_addressable and {d.platform for d in x.devices()} == {"cpu"} for x in arrays)


def checksums(tree: Any, prefix: str = "") -> dict[str, int]:
    """{leaf path: checksum} of every array of `tree`; `prefix` names where `tree` sits in a train state.

    Arrays in host memory (the CPU backend) are summed by numpy where they lie; arrays on accelerators on the
    device, with one transfer of the sums. Both give the same numbers: integer sums modulo 2**32."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    names = [prefix + jax.tree_util.keystr(path) for path, _ in leaves]
    arrays = [x for _, x in leaves]
    if _in_host_memory(arrays):
        return dict(zip(names, (_host_words(x) for x in arrays)))
    sums = programs.run(word_sums, arrays, out=[0] * len(arrays), profile="once")
    values = jax.device_get(sums)  # one transfer for all leaves
    return {n: int(v) for n, v in zip(names, values)}


def verify(tree: Any, expected: dict | None, where: str, prefix: str = "") -> None:
    """Raise UserError naming `where` if a leaf's checksum differs from the saved one (None: an older
    checkpoint saved without checksums, taken as it is)."""
    if not expected:
        return
    for name, value in checksums(tree, prefix).items():
        if name in expected and expected[name] != value:
            raise UserError(f"{where} is damaged: the array {name} fails its checksum")


META_CHECKSUM = "meta_sha256"  # the key of the metadata's own checksum (checkpoints before 0.2.0 have none)


def _meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != META_CHECKSUM}
    return hashlib.sha256(cache.canonical(body)).hexdigest()


def seal_meta(meta: dict) -> dict:
    """`meta` with its checksum (the values must be JSON: what is checked on load is what JSON gives back)."""
    return {**meta, META_CHECKSUM: _meta_digest(json.loads(json.dumps(meta)))}


def meta_is_intact(meta: dict) -> bool:
    """Does loaded metadata match its checksum? Metadata of a version that wrote none (before 0.2.0) is taken as
    it is; from 0.2.0 on, metadata without one is refused too (the checksum deleted with the edit it hid)."""
    if META_CHECKSUM in meta:
        return meta[META_CHECKSUM] == _meta_digest(meta)
    version = str((meta.get("versions") or {}).get("bigram-jax", "0"))
    return tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:2]) < (0, 2)
