"""scripts/device_check.py: on whatever backend JAX has (a lent GPU or TPU above all), every part of what the project
must show there, each in its own time-boxed process (device_parts.py), within one budget:

  machine    the devices, JAX's memory pool, the versions, and what `auto` picks on this machine
  job        the lecture's job with empty caches, then warm (the job's own account of its time; a warm run
             compiles nothing)
  train, generate, eval   the bench's rows, torch on the same device (CUDA on a GPU), interleaved as the bench does
  steps_8k, steps_50k     one-device steps at V = 8192 and 50,304: time, peak memory against the plan, bandwidth
  resume     bit-exact resume here; a checkpoint written on a CPU restored and resumed here
  tests      the test files that exercise the device, the device as JAX's platform

A part that fails, or is killed at the end of its box, is recorded with its error and the next one runs. Written:
DIR/device_check.json (every figure, check and failure), DIR/device_check.md, DIR/benchmarks_gpu.md (the GPU section
of docs/benchmarks.md; `--docs` also puts it there). `--quick`: the same parts, small, on the CPU in under 3 minutes.
`--time-scale X` multiplies every box and the budget by X: on a slow or loaded machine (CI's smoke run) the boxes
then only catch hangs.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bigram_jax.cli.guard import OneLineParser, command, guard, prog
from bigram_jax.errors import UserError
from bigram_jax.run.signals import set_stop_handlers

from .device_parts import PARTS, PLATFORM_ENV, RUNNING, kill_group, run_bounded
from .outputs import check_file, check_folder, write_text
from .paths import ROOT

WRITTEN = ("device_check.json", "device_check.md", "benchmarks_gpu.md")  # in --out
BUDGET_S = {False: 450.0, True: 170.0}  # all parts together: 7.5 minutes of a lent device's 15 (3 on the CPU)
MIN_BOX_S = 15.0  # a part with less time left than this is not started (and says so)


def parser() -> OneLineParser:
    """The flags of scripts/device_check.py."""
    p = OneLineParser(prog=prog("device_check.py"), description="Measure what matters on this machine's JAX "
                      "backend (a lent GPU or TPU): every part time-boxed, every failure recorded.")
    p.add_argument("--out", required=True, type=Path, help="folder for device_check.json, device_check.md and "
                   "benchmarks_gpu.md (created if absent)")
    p.add_argument("--quick", action="store_true", help="every part at small sizes: on the CPU in under 3 minutes")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}")
    p.add_argument("--budget", type=float, help="seconds for all parts (default: 450; 170 with --quick)")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="X", help="multiply every part's time box and "
                   "the budget by X (default: 1): on a slow or loaded machine the boxes then only catch hangs")
    p.add_argument("--docs", action="store_true", help="also write the GPU section into docs/benchmarks.md (only "
                   "a full run on a GPU or TPU measures one)")
    return p


def run_part(name: str, quick: bool, box: float, env: dict, work: Path) -> dict:
    """One part in its own process, killed with its children at `box` seconds: its figures, checks and error."""
    out = work / f"{name}.json"
    t = time.perf_counter()
    status, log = run_bounded([sys.executable, "-m", "bench.device_parts", name, str(out), f"{box:.1f}",
                               *(["--quick"] if quick else [])], env, box, group=True)
    result = json.loads(out.read_text()) if out.exists() else {}
    error = result.pop("error", None)
    if status is None:
        error = f"stopped at its time box ({box:.0f} s)"
    elif error is None and status != 0:
        error = f"exited {status}: " + (log.strip().splitlines() or [""])[-1][:300]
    checks = result.pop("checks", {})
    ok = error is None and all(v is not False for v in checks.values())
    return {"status": "ok" if ok else "failed", "seconds": time.perf_counter() - t, "box_s": box, "error": error,
            "checks": checks, "figures": result, "log_tail": "" if error is None else log[-3000:]}


def run_all(names: list[str], quick: bool, budget: float, env: dict, scale: float = 1.0) -> dict:
    """Every chosen part in order, each boxed by its own limit (times `scale`) and by what is left of the budget."""
    deadline, parts = time.monotonic() + budget, {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**env, "XDG_CACHE_HOME": f"{tmp}/cache"}  # the check's own caches, empty at its start
        for name in names:
            box = min(PARTS[name][3 if quick else 2] * scale, deadline - time.monotonic())
            if box < MIN_BOX_S:
                parts[name] = {"status": "failed", "seconds": 0.0, "box_s": 0.0, "checks": {}, "figures": {},
                               "error": "not run: the check's time budget was spent", "log_tail": ""}
            else:
                parts[name] = run_part(name, quick, box, env, Path(tmp))
            if name == "machine" and "jax_platforms" in parts[name]["figures"]:
                env[PLATFORM_ENV] = parts[name]["figures"]["jax_platforms"]  # the tests' JAX platform
            print(f"[{name}: {parts[name]['status']}, {parts[name]['seconds']:.0f} s]", file=sys.stderr, flush=True)
    return parts


def _corpus() -> Path:
    """tinyshakespeare where it already lies (BIGRAM_JAX_DATA, the user's cache), else downloaded once: a lent
    device has no network, so bring a copy and point BIGRAM_JAX_DATA at it."""
    from bigram_jax.config import Config
    from bigram_jax.corpus.files import resolve_corpus

    path = resolve_corpus(Config().data)
    if not path.is_file():
        raise UserError(f"tinyshakespeare not found at {path}: set BIGRAM_JAX_DATA to a copy")
    return path.resolve()


def _write(doc: dict, out: Path, docs: bool, private: list) -> list[Path]:
    """The JSON, the report and the GPU section (and, with `docs`, the section in docs/benchmarks.md)."""
    from .device_page import on_accelerator, report, section, splice
    from .paths import scrub

    written = [out / name for name in WRITTEN]
    write_text(written[0], json.dumps(doc, indent=2, default=float) + "\n")
    write_text(written[1], scrub(report(doc), private))
    write_text(written[2], scrub(section(doc), private))
    if docs and on_accelerator(doc):
        page = ROOT / "docs" / "benchmarks.md"
        write_text(page, splice(page.read_text(), written[2].read_text()))
        written.append(page)
    elif docs:
        print("device_check.py: docs/benchmarks.md left alone: only a full run on a GPU or TPU writes its GPU "
              "section", file=sys.stderr)
    return written


def _check(argv: Sequence[str] | None) -> int:
    """Parse, run every part, write the files; exit status 1 if any part failed."""
    p = parser()
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    if set(names) - set(PARTS) or not names or (args.budget is not None and args.budget <= 0) \
            or not args.time_scale > 0:
        p.error(f"--only takes parts of {','.join(PARTS)}; --budget and --time-scale must be > 0")
    check_folder(args.out, WRITTEN, "--out")  # before any part runs: on a lent GPU a late refusal costs its budget
    if args.docs:
        check_file(ROOT / "docs" / "benchmarks.md", "--docs")
    corpus, t = _corpus(), time.perf_counter()
    budget = (args.budget or BUDGET_S[args.quick]) * args.time_scale
    parts = run_all([n for n in PARTS if n in names], args.quick, budget, {
        **os.environ, "PYTHONPATH": str(ROOT), "BIGRAM_JAX_DATA": str(corpus)}, args.time_scale)
    doc = {"quick": args.quick, "budget_s": budget, "time_scale": args.time_scale, "wall_s": time.perf_counter() - t,
           "machine": parts.get("machine", {}).get("figures", {}), "parts": parts,
           "failures": [f"{n}: {q['error'] or 'a check failed'}" for n, q in parts.items() if q["status"] != "ok"]}
    written = _write(doc, args.out, args.docs, [corpus, Path.home(), Path.cwd(), args.out, Path(tempfile.gettempdir())])
    print((args.out / "device_check.md").read_text())
    print(f"wrote {', '.join(str(w) for w in written)}; {len(doc['failures'])} part(s) failed", file=sys.stderr)
    return 1 if doc["failures"] else 0


def _stop(signum: int, _frame) -> None:
    """A stop signal: the running part and all it started are killed (they hold the device), then one line."""
    for pgid in list(RUNNING):
        kill_group(pgid)
    print(f"device_check.py: stopped by {signal.Signals(signum).name}; nothing written", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/device_check.py: user errors as one line on stderr; a stop ends the parts too."""
    set_stop_handlers(_stop)
    return guard(prog("device_check.py"), lambda: _check(argv))


device_check_command = command(main)
