"""Training tokens that stay on the host: each block's windows gathered from the memory map and fed to the devices.

The window starts of step s come from `draw_offsets`, the same jax.random calls the device-resident loop makes, so
both paths train on the same batches and give the same losses. A background thread gathers the next blocks while
the devices train on this one; in a multi-process run each process reads only its own devices' rows.
"""
from __future__ import annotations

import queue
import threading
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bigram_jax.compile import programs
from bigram_jax.config import Config
from bigram_jax.corpus.load import Corpus
from bigram_jax.train import DRAW_STEPS, TrainState, draw_offsets, train_steps_fed

PREFETCH_BYTES = 256 << 20  # blocks gathered ahead, at most this many bytes of windows (and 1..4 blocks)


class HostFeed:
    """`advance(state, step, n)`: n steps from `step`, on windows gathered on the host. Call close() at the end."""

    def __init__(self, corpus: Corpus, cfg: Config, state: TrainState, mesh: Any):
        self.cfg, self.tokens, self.file = cfg, corpus.train, corpus.train_file
        self.rows = corpus.rows  # --compact-vocab: the file holds tokenizer ids, the table takes rows
        self.key, self.first = state.key.copy(), int(state.step)  # a copy: the state is donated to each chunk
        B, T = cfg.batch_size, cfg.block_size
        self.shape = (DRAW_STEPS, B, T + 1)
        self.sharding = NamedSharding(mesh, P(None, "data", None))  # each device holds its rows of every step
        self._offsets = jax.jit(draw_offsets, static_argnums=(2, 3))
        abstract = jax.ShapeDtypeStruct(self.shape, np.int32, sharding=self.sharding)
        self._fn = programs.compiled(train_steps_fed, state, abstract, np.int32(0), np.int32(1),
                                     out=(state, 0.0), profile="loop", cfg=cfg, mesh=mesh)
        depth = int(min(4, max(1, PREFETCH_BYTES // (4 * np.prod(self.shape)))))
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True, name="bigram-jax-feed")
        self._thread.start()
        self._block: tuple[int, jax.Array] | None = None

    def _gather(self, first: int) -> jax.Array:
        """The windows (K, B, T + 1) of steps first .. first + K - 1, as a global array over the mesh."""
        if self.file is not None:
            self.file.check_unchanged()  # a rewritten or truncated file must not feed wrong (or unmapped) data
        ix = np.asarray(self._offsets(self.key, np.int32(first), len(self.tokens), self.cfg))  # (K, B)
        span = np.arange(self.cfg.block_size + 1)

        def rows(index: tuple) -> np.ndarray:  # one local device's share: its rows of every step
            if self.file is not None:  # read, not mapped: the process keeps no pages of a large file
                w = self.file.windows(ix[:, index[1]], len(span))  # (K, b, T + 1)
                return w if self.rows is None else self.rows[w]
            return np.asarray(self.tokens[ix[:, index[1], None] + span], dtype=np.int32)

        return jax.make_array_from_callback(self.shape, self.sharding, rows)

    def _produce(self) -> None:
        """Gather blocks in step order into the queue until stopped; an error is handed on to `advance`."""
        first = self.first
        while not self._stop.is_set():
            try:
                item: Any = (first, self._gather(first))
            except BaseException as e:  # noqa: BLE001  (re-raised in the training thread)
                item = e
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
            first += DRAW_STEPS

    def _block_for(self, step: int) -> tuple[int, jax.Array]:
        """The block that holds `step` (blocks come in order: the loop never goes back)."""
        while self._block is None or step >= self._block[0] + DRAW_STEPS:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            self._block = item
        return self._block

    def advance(self, state: TrainState, step: int, n: int) -> tuple[TrainState, np.ndarray]:
        """Train steps step .. step + n - 1; returns the state and their batch losses, (n,) on the host."""
        losses = []
        while n > 0:
            first, w = self._block_for(step)
            m = min(n, first + DRAW_STEPS - step)
            state, block_losses = self._fn(state, w, np.int32(step - first), np.int32(m))
            losses.append((block_losses, m))  # read once the chunk is queued: no sync between its calls
            step, n = step + m, n - m
        return state, np.concatenate([np.asarray(x)[:m] for x, m in losses])

    def close(self) -> None:
        """Stop the gathering thread."""
        self._stop.set()
        self._thread.join(timeout=5)
