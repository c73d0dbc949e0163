"""The device check's parts, each run in a process of its own:

    python -m bench.device_parts PART OUT.json BOX_SECONDS [--quick]

A part writes {figure: value, ..., "checks": {what: passed}} to OUT.json. Its own process, killed with its children
at the end of its time box, keeps a hang or an out-of-memory abort from taking the other parts with it, and lets
each part have the accelerator alone (JAX preallocates 75% of a GPU in every process that starts a GPU backend).
This module imports nothing heavy at the top: the orchestrator reads PARTS and run_bounded without starting JAX.

Here: the machine (and what `auto` picks on it), the test files that exercise the device, and the lecture's job
cold and warm (with the compiled-program cache's account: a warm run compiles nothing). The resume part is in
device_resume.py, the speed parts in device_speed.py.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .paths import ROOT

# name: (module, function, time box in seconds for a full run, for --quick), in the order they run
PARTS = {
    "machine": ("device_parts", "part_machine", 90, 40),
    "job": ("device_parts", "part_job", 120, 40),
    "train": ("device_speed", "part_train", 120, 50),
    "generate": ("device_speed", "part_generate", 120, 40),
    "eval": ("device_speed", "part_eval", 60, 30),
    "steps_8k": ("device_speed", "part_steps_8k", 90, 30),
    "steps_50k": ("device_speed", "part_steps_50k", 120, 30),
    "resume": ("device_resume", "part_resume", 120, 50),
    "tests": ("device_parts", "part_tests", 180, 40),
}
# the test files that run programs on the device (--quick: one small one)
TEST_FILES = ("tests/test_model.py", "tests/test_train.py", "tests/test_evaluate.py", "tests/test_sampling.py",
              "tests/test_lecture.py", "tests/compile/test_programs.py", "tests/checkpoint/test_manager.py")
QUICK_TEST_FILES = ("tests/test_evaluate.py",)
# parts that use the device in their own process alone (the others start processes that need it first)
JAX_FIRST = {"machine", "train", "generate", "eval", "steps_8k", "steps_50k"}
PLATFORM_ENV = "BIGRAM_JAX_CHECK_PLATFORM"  # the JAX_PLATFORMS value of the machine's accelerator (from `machine`)


RUNNING: set[int] = set()  # process groups of the parts running now (the orchestrator kills them when stopped)


def run_bounded(cmd: list[str], env: dict, timeout: float, group: bool = False) -> tuple[int | None, str]:
    """(exit status, or None when killed at `timeout`; stdout and stderr together). With `group` (the orchestrator
    running a part) the command gets a process group of its own, killed whole when the command ends or times out:
    what a part started must not hold the accelerator when the next part runs. Inside a part, its commands stay
    in the part's group, so the orchestrator's kill reaches them too."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=group)
    if group:
        RUNNING.add(p.pid)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        p.kill()
        return None, p.communicate()[0]
    finally:
        if group:
            kill_group(p.pid)


def kill_group(pgid: int) -> None:
    """SIGKILL a part's process group (nothing if it is gone)."""
    RUNNING.discard(pgid)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def part_machine(quick: bool, box: float) -> dict:
    """The machine as JAX and torch see it, the memory JAX may use, and what `auto` picks here."""
    import jax
    import torch

    from .machine import describe

    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    version = " ".join(device.client.platform_version.split())  # may span lines
    platform = {"gpu": "rocm" if "rocm" in version.lower() else "cuda"}.get(device.platform, device.platform)
    env = {k: v for k, v in os.environ.items() if k.startswith(("XLA_PYTHON_CLIENT_", "XLA_FLAGS", "JAX_PLATFORMS"))}
    total = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None
    return {**describe(), "platform_version": version, "jax_platforms": platform, "env": env, "gpu_memory_gib": total,
            "memory": {k: stats[k] / 2**30 for k in ("bytes_limit", "bytes_in_use", "peak_bytes_in_use") if k in stats},
            "torch_cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_cuda_version": torch.version.cuda, "auto": _auto_choices()}


def _auto_choices() -> dict:
    """What `auto` picks on this machine for the lecture's job and for GPT-2's vocabulary on OpenWebText."""
    from types import SimpleNamespace

    import jax

    from bigram_jax.config import Config
    from bigram_jax.devices import memory, parallel
    from bigram_jax.errors import UserError
    from bigram_jax.train import DRAW_STEPS

    out = {}
    for name, V, tokens, cfg in (("lecture", 65, 1_003_854, Config()),
                                 ("gpt2_openwebtext", 50_304, 9_000_000_000, Config(batch_size=64, block_size=256))):
        try:
            mp = parallel.choose_model_parallel(cfg, V, jax.devices())
        except UserError as e:
            out[name] = {"refused": str(e)}
            continue
        mesh = SimpleNamespace(shape={"data": len(jax.devices()) // mp, "model": mp})
        home, plan = memory.plan(cfg, tokens, V, mesh, DRAW_STEPS)
        out[name] = {"vocab_size": V, "tokens": tokens, "model_parallel": mp, "data_on": home,
                     "loss": cfg.for_vocab(V).loss, "planned_gib_per_device": sum(plan.values()) / 2**30}
    return out


def part_tests(quick: bool, box: float) -> dict:
    """The device's test files under pytest, the accelerator as JAX's platform (tests' own scripts too)."""
    files = QUICK_TEST_FILES if quick else TEST_FILES
    platform = os.environ.get(PLATFORM_ENV) or os.environ.get("JAX_PLATFORMS") or "cpu"
    # the pytest process holds the device while the scripts it starts need it too: no process takes 75% up front
    env = {**os.environ, "JAX_PLATFORMS": platform, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    status, out = run_bounded([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *files], env, box - 10)
    outcomes = re.findall(r"^(tests/\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)", out, flags=re.MULTILINE)
    count = {k: sum(1 for _, o in outcomes if o == k) for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    failed = [t for t, o in outcomes if o in ("FAILED", "ERROR")]
    return {"platform": platform, "files": list(files), "passed": count["PASSED"], "skipped": count["SKIPPED"],
            "failed": failed, "timed_out": status is None, "tail": out[-1500:] if failed or status else "",
            "checks": {"every test ran and passed": status == 0 and not failed and count["PASSED"] > 0}}


JOB_QUICK_FLAGS = ["--max-iters", "100", "--eval-interval", "50", "--sample-tokens", "50"]
UNTIMED = ("tokens_per_second", "elapsed_seconds")  # the metrics that are clock readings


def train_py(env: dict, deadline: float, *flags: str) -> str:
    """scripts/train.py with `flags`, stopped at `deadline` (time.monotonic()): its log. A run that times out or
    exits non-zero raises with its flags and the log's tail: the part's error then says which run failed and why."""
    status, log = run_bounded([sys.executable, "scripts/train.py", *flags], env, max(1.0, deadline - time.monotonic()))
    if status != 0:
        raise RuntimeError(f"train.py {' '.join(flags)} {'timed out' if status is None else f'exited {status}'}: "
                           f"{log[-800:]}")
    return log


def metrics_rows(out: Path) -> list[dict]:
    """A run's metrics.jsonl rows without the clock readings: what two runs of the same job must log alike."""
    return [{k: v for k, v in json.loads(x).items() if k not in UNTIMED}
            for x in (out / "metrics.jsonl").read_text().splitlines()]


def _job(out: Path, env: dict, flags: list[str], deadline: float) -> dict:
    """One lecture job as a process: its wall time, its own account of that time, and what JAX compiled in it."""
    t = time.perf_counter()
    log = train_py(env, deadline, *flags, "--out-dir", str(out))
    wall, ended = time.perf_counter() - t, time.time()
    s = json.loads((out / "summary.json").read_text())
    compiles = log.count("Finished XLA compilation") - log.count("Persistent compilation cache hit")
    return {"wall_s": wall, "account_s": {**s["seconds"], "exit": ended - s["ended_at"]}, "xla_compiles": compiles,
            "lowered": sorted(set(re.findall(r"Compiling (jit\([^)]*\))", log))), "rows": metrics_rows(out),
            "final_val_loss": s["val_loss"]}


def part_job(quick: bool, box: float) -> dict:
    """The lecture's job with empty caches (cold), then again (warm): a warm run loads every program it needs."""
    flags = JOB_QUICK_FLAGS if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": f"{tmp}/cache", "JAX_LOG_COMPILES": "1"}  # empty: the first is cold
        deadline = time.monotonic() + box - 5
        runs = {k: _job(Path(tmp) / k, env, flags, deadline) for k in ("cold", "warm")}
        programs = len(list(Path(tmp, "cache", "bigram_jax", "programs").glob("*.bin")))
    same = runs["cold"].pop("rows") == runs["warm"].pop("rows")
    return {**runs, "kept_programs": programs, "steps": 100 if quick else 3000,
            "checks": {"warm run compiles nothing": runs["warm"]["xla_compiles"] == 0,
                       "warm run lowers nothing": not runs["warm"]["lowered"],
                       "warm run logs the cold run's losses": same}}


def main(argv: list[str]) -> int:
    """Run one part; its figures (or its error, as one line) go to OUT.json."""
    name, out, box = argv[0], Path(argv[1]), float(argv[2])
    module, fn = PARTS[name][:2]
    t = time.perf_counter()
    try:
        # JAX refuses CUDA libraries older than it needs; torch does not. So JAX's load first, before torch's.
        if name in JAX_FIRST:
            import jax

            jax.devices()
        part = getattr(importlib.import_module(f"bench.{module}"), fn)
        result, status = part("--quick" in argv, box), 0
    except Exception as e:  # noqa: BLE001  (any failure of a part is its result; the traceback goes to the log)
        traceback.print_exc()
        result, status = {"error": f"{type(e).__name__}: {str(e).strip()[:800]}"}, 1
    out.write_text(json.dumps({**result, "part_seconds": time.perf_counter() - t}, default=float))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
