"""Timing harness: medians of interleaved blocks, cost curves and their growth, whole-process wall and RSS."""
from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .paths import ROOT

Fn = Callable[[int], Any]  # fn(n) does n units of work and syncs before returning


def timed(fn: Fn, n: int) -> float:
    """Wall seconds of fn(n)."""
    t = time.perf_counter()
    fn(n)
    return time.perf_counter() - t


def median_per_unit(fns: dict[str, Fn], repeats: int, target_s: float) -> dict[str, float]:
    """Median seconds per unit of each fn, in blocks of ~target_s after a warm-up, contenders interleaved."""
    sizes = {}
    for name, fn in fns.items():
        n, dt = 1, timed(fn, 1)  # warm-up: first-call work (compilation, caches) stays out of the figures
        if dt < 10 * target_s:  # not plainly slow: probe again, warm
            dt = timed(fn, 1)
        while dt < target_s / 10:
            n *= 10
            dt = timed(fn, n)
        sizes[name] = max(1, round(n * target_s / dt))
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(timed(fn, sizes[name]) / sizes[name])
    return {name: statistics.median(ts) for name, ts in runs.items()}


def curve(fn: Fn, start: int, stop: int, cap_s: float, repeats: int) -> list[list[float]]:
    """[n, median seconds of fn(n)] for n = start, 2, 5, 10 x start ... stop, while a run would take < ~2 cap_s."""
    fn(max(1, start // 10))  # warm-up
    points, n = [], start
    while True:
        ts: list[float] = []
        while len(ts) < repeats and sum(ts) < cap_s:
            ts.append(timed(fn, n))
        points.append([n, statistics.median(ts)])
        nxt = min(n * 5 // 2 if str(n)[0] == "2" else n * 2, stop)
        if n >= stop or at(points, nxt)[0] > 2 * cap_s:  # the next run, predicted from the growth so far
            return points
        n = nxt


def exponent(points: list[list[float]]) -> float:
    """p in t ~ n^p between the last two points (1, linear, when there is one)."""
    (n1, t1), (n2, t2) = points[-2:] if len(points) > 1 else ([1, 1], [math.e, math.e])
    return math.log(t2 / t1) / math.log(n2 / n1)


def at(points: list[list[float]], n: int) -> tuple[float, bool]:
    """(seconds at n, extrapolated?): measured, or the last point grown by the last exponent, kept in [1, 2]
    (an underestimate for the lecture's generate, whose exponent only rises towards 2)."""
    if n == points[-1][0]:
        return points[-1][1], False
    return points[-1][1] * (n / points[-1][0]) ** min(2.0, max(1.0, exponent(points))), True


# A small launcher starts each timed job: a child forked from this large process would report this
# process's RSS as its peak (Linux keeps the pre-exec high-water mark in ru_maxrss).
# Its first argument is where the job's stdout goes.
LAUNCHER = ("import os, sys, time; t = time.perf_counter(); pid = os.posix_spawn(sys.argv[2], sys.argv[2:], "
            "os.environ, file_actions=[(os.POSIX_SPAWN_OPEN, 1, sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "
            "0o600)]); _, st, ru = os.wait4(pid, 0); "
            "print(time.perf_counter() - t, ru.ru_maxrss / 1024, os.waitstatus_to_exitcode(st), time.time())")


def run_process(cmd: list[str], env: dict, expect: int = 0, stdout: str = os.devnull) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one process, its stdout written to `stdout`; raises with its stderr unless
    it exits with `expect`."""
    with tempfile.TemporaryFile() as log:
        out = subprocess.run([sys.executable, "-c", LAUNCHER, stdout, *cmd], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=log, text=True, check=True).stdout.split()
        if out[2] != str(expect):
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited {out[2]}: {log.read().decode()[-2000:]}")
    LAST_END[0] = float(out[3])  # the epoch second the process ended (the start-up section's exit time)
    return float(out[0]), float(out[1])


LAST_END = [0.0]
