"""The bench command: parse flags, run the chosen sections, write the JSON, print the tables."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import jax
import torch

from bigram_jax.config import Config
from bigram_jax.run import load_corpus

from .context import QUICK, SECTIONS, Ctx, Sizes
from .limits import sec_limits
from .report import goals, report
from .sections import sec_compile, sec_eval, sec_generate, sec_job, sec_scale, sec_train

SECTION_FNS = {"compile": sec_compile, "train": sec_train, "scale": sec_scale, "generate": sec_generate,
               "eval": sec_eval, "job": sec_job, "limits": sec_limits}


def machine() -> dict:
    """CPU model, cores, memory and platform of this machine (Linux /proc where there is one)."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    proc = {p: Path(p).read_text() if Path(p).exists() else "" for p in ("/proc/cpuinfo", "/proc/meminfo")}
    for ln in proc["/proc/cpuinfo"].splitlines() + proc["/proc/meminfo"].splitlines():
        if ln.startswith("model name"):
            info["cpu"] = ln.split(":", 1)[1].strip()
        elif ln.startswith("MemTotal"):
            info["memory_gib"] = int(ln.split()[1]) / 2**20
    return info


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections, write the JSON, print the tables."""
    p = argparse.ArgumentParser(description="Benchmark bigram_jax against the lecture's torch code.")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of every section (~1 minute)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, help="timed blocks per figure (default: 5; 2 with --quick)")
    p.add_argument("--out", default="bench.json", help="the JSON of every figure (default: bench.json)")
    a = p.parse_args(argv)
    only = set(a.only.split(","))
    if only - set(SECTIONS) or (a.repeats is not None and a.repeats < 1):
        p.error(f"--only takes sections of {','.join(SECTIONS)}; --repeats must be >= 1")
    sizes = QUICK if a.quick else Sizes()
    c = Ctx(sizes, a.repeats or (2 if a.quick else 5), load_corpus(Config()))
    load_start = os.getloadavg()
    for name in (s for s in SECTIONS if s in only):
        t = time.perf_counter()
        c.results[name] = SECTION_FNS[name](c)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
    libs = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch")
    doc = {"machine": machine(), "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
           "versions": {n: metadata.version(n) for n in libs},
           "torch_threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
           "lecture_code": "torch_ref.model", "tuned_torch_batch": "scripts/bench_parts/torch_baselines.py get_batch_fast",
           "quick": a.quick, "repeats": c.repeats, "sizes": asdict(sizes),
           "loadavg": {"start": load_start, "end": os.getloadavg()}, "results": c.results,
           "goals": goals(c.results, sizes)}
    Path(a.out).write_text(json.dumps(doc, indent=2, default=float) + "\n")
    print(report(doc))
    return 0
