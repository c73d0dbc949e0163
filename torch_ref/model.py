"""The lecture's bigram.py in PyTorch: model, batches, estimate_loss and training loop, as the parity reference.

Run it as the lecture's job: `python -m torch_ref.model --data input.txt` (3000 steps, eval every 300,
seed 1337, 500 sampled tokens). On the CPU it prints what the lecture's script prints, line for line.
Only torch is imported, so timing this process as a whole measures the lecture, not JAX's start-up.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.nn import functional as F

BatchFn = Callable[[torch.Tensor, int, int, str], tuple[torch.Tensor, torch.Tensor]]


class BigramLanguageModel(nn.Module):
    """Each token reads the logits for the next token off a row of a V x V lookup table."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)  # N(0, 1) init, as the lecture

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The lecture's forward: logits (B, T, C) and None, or logits (B*T, C) and the mean cross-entropy."""
        logits = self.token_embedding_table(idx)  # (B, T, C)
        if targets is None:
            return logits, None
        B, T, C = logits.shape
        logits = logits.view(B * T, C)  # (B*T, C): the lecture's notebook shape, as bigram_jax returns
        loss = F.cross_entropy(logits, targets.view(B * T))
        return logits, loss

    def generate(self, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """The lecture's sampler: (B, T) -> (B, T + max_new_tokens), re-reading the whole context each step."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx)  # (B, T, C): the full context, though a bigram needs only the last token
            logits = logits[:, -1, :]  # (B, C)
            probs = F.softmax(logits, dim=-1)  # (B, C)
            idx_next = torch.multinomial(probs, num_samples=1)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        return idx


def get_batch(data: torch.Tensor, batch_size: int, block_size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's get_batch: torch.randint offsets, a Python list of slices stacked, then moved to `device`."""
    ix = torch.randint(len(data) - block_size, (batch_size,))  # (B,)
    x = torch.stack([data[i:i + block_size] for i in ix])  # (B, T)
    y = torch.stack([data[i + 1:i + block_size + 1] for i in ix])  # (B, T)
    return x.to(device), y.to(device)


def get_batch_tuned(data: torch.Tensor, batch_size: int, block_size: int, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """get_batch with one vectorized gather, on `data`'s device; on the CPU the very same batches as the lecture's."""
    ix = torch.randint(len(data) - block_size, (batch_size,), device=data.device)  # (B,): same draws as above
    pos = ix[:, None] + torch.arange(block_size, device=data.device)  # (B, T)
    return data[pos].to(device), data[pos + 1].to(device)  # no-op moves when `data` already lives on `device`


@torch.no_grad()
def estimate_loss(model: nn.Module, splits: dict[str, torch.Tensor], batch_size: int, block_size: int,
                  device: str, eval_iters: int = 200, batch_fn: BatchFn = get_batch) -> dict[str, float]:
    """The lecture's estimate_loss: mean loss of `eval_iters` random batches per split, in eval mode."""
    out = {}
    model.eval()
    for split, data in splits.items():
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = batch_fn(data, batch_size, block_size, device)
            _, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    return out


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor
               ) -> torch.Tensor:
    """One step of the lecture's loop on batch (xb, yb); returns the batch loss (before the update)."""
    _, loss = model(xb, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def make_optimizer(model: nn.Module, learning_rate: float = 1e-2) -> torch.optim.Optimizer:
    """The lecture's optimizer: AdamW with torch's defaults (betas 0.9/0.999, eps 1e-8, weight decay 0.01)."""
    return torch.optim.AdamW(model.parameters(), lr=learning_rate)


def train(model: nn.Module, train_data: torch.Tensor, val_data: torch.Tensor, *, max_iters: int = 3000,
          eval_interval: int = 300, learning_rate: float = 1e-2, batch_size: int = 32, block_size: int = 8,
          eval_iters: int = 200, device: str = "cpu", batch_fn: BatchFn = get_batch,
          log: Callable[[str], None] = print) -> list[tuple[int, float, float]]:
    """The lecture's training loop; returns the (step, train loss, val loss) estimates it printed."""
    optimizer = make_optimizer(model, learning_rate)
    history = []
    for it in range(max_iters):
        if it % eval_interval == 0:  # the lecture evaluates at 0, 300, ..., 2700 (not after the last step)
            losses = estimate_loss(model, {"train": train_data, "val": val_data}, batch_size, block_size,
                                   device, eval_iters, batch_fn)
            log(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            history.append((it, losses["train"], losses["val"]))
        xb, yb = batch_fn(train_data, batch_size, block_size, device)
        train_step(model, optimizer, xb, yb)
    return history


class UsageError(Exception):
    """A bad flag or data file: reported as one line on stderr."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    """The job's flags; the defaults are the lecture's hyperparameters."""
    p = _Parser(prog="python -m torch_ref.model", description="The lecture's bigram.py, in PyTorch.")
    p.add_argument("--data", default=os.environ.get("BIGRAM_JAX_DATA", "input.txt"),
                   help="UTF-8 corpus (default: $BIGRAM_JAX_DATA, else input.txt as the lecture)")
    for flag, kind, default in (("--batch-size", int, 32), ("--block-size", int, 8), ("--max-iters", int, 3000),
                                ("--eval-interval", int, 300), ("--learning-rate", float, 1e-2),
                                ("--eval-iters", int, 200), ("--seed", int, 1337), ("--sample-tokens", int, 500)):
        p.add_argument(flag, type=kind, default=default, help=f"(default: {default})")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda if available, else cpu, as the lecture)")
    p.add_argument("--tuned", action="store_true",
                   help="vectorized get_batch with the data kept on the device (for fair benchmarks)")
    return p


def _read_text(path: str) -> str:
    """The corpus, or a UsageError naming what is wrong with it."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read data file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"data file is not UTF-8 text: {path}") from None
    if not text:
        raise UsageError(f"data file is empty: {path}")
    return text


def _run(argv: Sequence[str] | None) -> int:
    """The body of the lecture's script, hyperparameters from the flags."""
    a = parser().parse_args(argv)
    if min(a.batch_size, a.block_size, a.eval_interval, a.eval_iters) <= 0 or min(a.max_iters, a.sample_tokens) < 0:
        raise UsageError("sizes and intervals must be positive, --max-iters and --sample-tokens >= 0")
    try:
        device = str(torch.device(a.device))
        torch.empty(0, device=device)  # fails now, not mid-run, on a missing CUDA
    except (RuntimeError, AssertionError) as e:
        raise UsageError(f"unusable --device {a.device}: {str(e).splitlines()[0]}") from None
    torch.manual_seed(a.seed)  # seeded before the model, as the lecture: same init, same batches, same sample
    text = _read_text(a.data)
    chars = sorted(list(set(text)))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))  # first 90% train, the rest val
    train_data, val_data = data[:n], data[n:]
    if len(val_data) <= a.block_size:
        raise UsageError(f"data file too short for --block-size {a.block_size}: {len(data)} characters")
    batch_fn: BatchFn = get_batch
    if a.tuned:
        train_data, val_data, batch_fn = train_data.to(device), val_data.to(device), get_batch_tuned
    model = BigramLanguageModel(len(chars))
    m = model.to(device)
    train(m, train_data, val_data, max_iters=a.max_iters, eval_interval=a.eval_interval,
          learning_rate=a.learning_rate, batch_size=a.batch_size, block_size=a.block_size,
          eval_iters=a.eval_iters, device=device, batch_fn=batch_fn)
    context = torch.zeros((1, 1), dtype=torch.long, device=device)
    print("".join(itos[i] for i in m.generate(context, max_new_tokens=a.sample_tokens)[0].tolist()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors are one line on stderr and exit status 2."""
    try:
        return _run(argv)
    except UsageError as e:
        print(f"torch_ref.model: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
