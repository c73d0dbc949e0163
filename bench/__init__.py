"""The benchmark behind scripts/bench.py: bigram_jax against the lecture's torch code, side by side in one run.

- `timing`: medians of interleaved blocks, cost curves, whole-process wall time and peak RSS;
- `context`: what the sections measure (`Sizes`) and what they share (`Ctx`);
- `sections`: compile, train, scale and generate; `evaluation`: exact against estimated losses;
  `whole_job`: scripts/train.py against the lecture's script as processes; `limits`: this machine's peak rates;
  `corpus_size`: whole runs from 1M to 2B tokens; `tokenize`: a large text through a BPE tokenizer.json;
  `unbroken`: a 300 MB text without line breaks, its peak RSS; `gpt2_bpe`: tinyshakespeare in GPT-2 BPE with
  --compact-vocab; `step_memory`: XLA's memory analysis of the step, the figures the memory plan uses;
- `outputs`: the files both commands write, checked before any work and written without following a link;
- `machine`: the machine and library versions a run names; `paths`: repo-relative paths for anything shown;
- `markdown`: the one table renderer of both pages; `tables`: a run's figures as tables; `page`:
  docs/benchmarks.md; `cli`: the command;
- `device_check`: scripts/device_check.py, the parts of `device_parts`, `device_speed` and `device_resume` run on a
  lent GPU or TPU (or the CPU), each in its own time-boxed process; `device_page`: its report and the GPU section.

The torch contenders beside the lecture's own code live in `torch_ref.baselines`. Torch (and torch_ref) is
imported inside the functions that run a torch row, never at a module's top.
"""
