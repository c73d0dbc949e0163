"""Run context: what the sections measure (Sizes) and what they share (Ctx: corpus, compiled steps, models)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from bigram_jax.compile import programs
from bigram_jax.config import Config
from bigram_jax.model import table_of
from bigram_jax.sampling import generate
from bigram_jax.train import init_state, train_steps

from .timing import Fn, curve, median_per_unit

if TYPE_CHECKING:  # torch is imported where a torch row runs: a run without one never loads it
    import torch

    import torch_ref.model as ref

LOSSES, SAMPLERS = ("counts", "gather"), ("cdf", "categorical")


@dataclass(frozen=True)
class Sizes:
    """What the sections measure; QUICK shrinks it to a smoke test."""

    train: tuple = ((32, 8), (512, 256))
    scale: tuple = ((32, 8), (512, 8), (64, 256), (512, 256), (4096, 256))  # 256 ... 1M tokens a step
    gen_ours: tuple = (1_000, 10_000, 100_000)  # one sequence
    gen_one: int = 10_000
    gen_many: tuple = (1_024, 1_000)  # (sequences, new tokens)
    gen_cap_s: float = 4.0  # the lecture's generate is measured while its next run would take < 2x this
    job: tuple = (3000, 300, 500)  # steps, eval interval, sampled tokens: the lecture's
    job_repeats: int = 3
    import_repeats: int = 3
    eval_iters: int = 200  # batches per split in the estimates (the lecture's)
    target_s: float = 0.25
    big: int = 1 << 26  # float32s in the memory-bandwidth test
    matmul: int = 2048
    corpus_tokens: tuple = (1_000_000, 400_000_000, 2_000_000_000)  # synthetic token files, V = 4096
    corpus_steps: int = 200  # steps of each corpus-size run (B = 64, T = 256)
    corpus_gpt2: int = 100_000_000  # tokens of the GPT-2-vocabulary file (ids up to 50,303), counted sparse
    tokenize_mb: int = 320  # MB of text encoded with a BPE tokenizer.json
    unbroken_mb: float = 300  # MB of text without a line break, encoded with the same tokenizer
    gpt2_steps: int = 50  # steps of the GPT-2 BPE shakespeare run (B = 64, T = 256, --compact-vocab)


QUICK = Sizes(train=((32, 8), (64, 32)), scale=((32, 8), (64, 32)), gen_ours=(100, 500), gen_one=500,
              gen_many=(16, 100), gen_cap_s=0.2, job=(100, 50, 50), job_repeats=1, import_repeats=1, eval_iters=20,
              target_s=0.02, big=1 << 22, matmul=256, corpus_tokens=(100_000, 2_000_000), corpus_steps=10,
              corpus_gpt2=1_000_000, tokenize_mb=3, unbroken_mb=3, gpt2_steps=3)


@dataclass
class Ctx:
    """The corpus, sizes and repeats of a run, and what its sections share."""

    sizes: Sizes
    repeats: int
    corpus: Any
    memo: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    torch_device: str = "cpu"  # where torch's contenders run: the device JAX measures on ("cuda" on a GPU)

    @property
    def V(self) -> int:
        """Vocabulary size."""
        return self.corpus.vocab_size

    def time(self, fns: dict[str, Fn], repeats: int = 0) -> dict[str, float]:
        """median_per_unit with this run's block size and repeats (at most `repeats` when given)."""
        return median_per_unit(fns, min(repeats or self.repeats, self.repeats), self.sizes.target_s)

    def trainer(self, B: int, T: int, loss: str) -> tuple[Fn, float]:
        """(fn(n): n fused bigram_jax steps at (B, T) with `loss`, compile seconds); compiled once, ahead."""
        if (B, T, loss) not in self.memo:
            cfg = Config(batch_size=B, block_size=T, loss=loss)
            data = jnp.asarray(np.asarray(self.corpus.train, np.int32))  # a token file's uint16 would overflow pair ids
            box = [init_state(cfg, self.V)]
            t = time.perf_counter()  # compiled ahead, so the timed blocks never include compilation
            step = programs.compile_lowered(train_steps.lower(box[0], data, jnp.int32(1), cfg), "loop")
            compile_s = time.perf_counter() - t

            def run(n: int) -> None:
                """n more steps from where the last call left off (the state is donated, so kept in a box)."""
                box[0], loss_sum = step(box[0], data, jnp.int32(n))
                loss_sum.block_until_ready()
            self.memo[B, T, loss] = run, compile_s, lambda n: step(init_state(cfg, self.V), data, jnp.int32(n))[0]
        return self.memo[B, T, loss][:2]

    def params(self) -> dict:
        """A trained table (3000 counts steps at the lecture's sizes) for generate and eval."""
        if "params" not in self.memo:
            self.trainer(32, 8, "counts")
            self.memo["params"] = self.memo[32, 8, "counts"][2](3000).params
        return self.memo["params"]

    def table(self) -> np.ndarray:
        """params()'s (V, V) logit table."""
        return np.array(table_of(self.params()))

    def torch_model(self) -> ref.BigramLanguageModel:
        """torch_ref's model holding params()'s table."""
        import torch

        import torch_ref.model as ref

        model = ref.BigramLanguageModel(self.V)
        with torch.no_grad():
            model.token_embedding_table.weight.copy_(torch.from_numpy(self.table()))
        return model.to(self.torch_device)

    def torch_data(self, split: str = "train", on_device: bool = False) -> torch.Tensor:
        """A split as the lecture's int64 tensor: in host memory, as the lecture keeps it, or on torch_device."""
        import torch

        data = torch.from_numpy(np.asarray(getattr(self.corpus, split)).astype(np.int64))
        return data.to(self.torch_device) if on_device else data

    def jax_gen(self, B: int, N: int, sampler: str) -> Fn:
        """fn(n): n calls of bigram_jax.generate, B sequences of N new tokens."""
        params, key, idx = self.params(), jax.random.key(0), np.zeros((B, 1), np.int32)
        return lambda n: [generate(params, key, idx, N, sampler=sampler).block_until_ready() for _ in range(n)]

    def lecture_curve(self, B: int, start: int, stop: int) -> list[list[float]]:
        """curve() of the lecture's generate for B sequences (memoized per B)."""
        if ("curve", B) not in self.memo:
            import torch

            from torch_ref.baselines import synced

            model, idx = self.torch_model(), torch.zeros((B, 1), dtype=torch.long, device=self.torch_device)
            self.memo["curve", B] = curve(synced(lambda n: model.generate(idx, n), self.torch_device), start, stop,
                                          self.sizes.gen_cap_s, min(self.repeats, 3))
        return self.memo["curve", B]
