"""The torch contenders beside the lecture's code: a tuned get_batch, a last-token generate, a timed train loop.

The lecture's own code (torch_ref.model) is the baseline the benchmark reports; these are the best plain
torch we found for the same work, so a speed-up is never quoted only against the lecture's teaching code.
Needs only torch, like torch_ref.model: a benchmark of it pays no JAX start-up.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.nn import functional as F

import torch_ref.model as ref

Fn = Callable[[int], Any]  # fn(n) does n units of work and returns when they are done (bench.timing)


def get_batch_fast(data: torch.Tensor, batch_size: int, block_size: int, device: str = "cpu") -> tuple:
    """Tuned get_batch: one indexed copy of B rows of a strided (N, T+1) window view (beats 2-D indexing), on
    `data`'s device (a GPU's copy of the corpus: no batch crosses the bus), then moved to `device` if elsewhere."""
    ix = torch.randint(len(data) - block_size, (batch_size,), device=data.device)
    xy = data.unfold(0, block_size + 1, 1)[ix]  # (B, T+1)
    return xy[:, :-1].contiguous().to(device), xy[:, 1:].contiguous().to(device)


def sync(device: str) -> None:
    """Wait for the work queued on `device`: CUDA runs asynchronously, so a clock read without this would time
    the queueing, not the work (nothing to wait for on the CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def synced(fn: Fn, device: str) -> Fn:
    """fn, then sync(device): a Fn for the timing harness, whose contract is to return when the work is done."""
    return lambda n: (fn(n), sync(device))


@torch.no_grad()
def generate_last(model: ref.BigramLanguageModel, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """The fair torch generate: feeds only the last token (all a bigram reads), collects tokens in a list."""
    last, out = idx[:, -1], [idx]
    for _ in range(max_new_tokens):
        last = torch.multinomial(F.softmax(model.token_embedding_table(last), dim=-1), num_samples=1)[:, 0]
        out.append(last[:, None])
    return torch.cat(out, dim=1)


def torch_trainer(data: torch.Tensor, V: int, B: int, T: int, batch_fn: Callable, threads: int = 0,
                  device: str = "cpu") -> Fn:
    """fn(n): n of the lecture's steps (fresh seeded model, AdamW) on batch_fn's batches, the model on `device`
    (batch_fn moves each batch there); threads=1 pins torch's CPU threads."""
    torch.manual_seed(1337)
    model = ref.BigramLanguageModel(V).to(device)
    opt = ref.make_optimizer(model)

    def run(n: int) -> None:
        """n train steps, torch pinned to `threads` for their duration (restored after, even on error)."""
        default = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            for _ in range(n):
                ref.train_step(model, opt, *batch_fn(data, B, T, device))
            sync(device)
        finally:
            if threads:
                torch.set_num_threads(default)
    return run
