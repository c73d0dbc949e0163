"""Pictures of a run: loss curves against the bigram floor, and the learned vs count-based transition table."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bigram_jax.errors import UserError
from bigram_jax.run.run_dir import METRICS_MAX
from bigram_jax.store.files import read_checked

MISSING = "--plot needs matplotlib: pip install 'bigram-jax[plot]'"
LOSS_PNG, TRANSITIONS_PNG = "loss.png", "transitions.png"
DPI = 140
RECORD_MAX = 64 << 20  # bytes of a summary.json or config.json: a few kB each


def check_available() -> None:
    """Raise UserError if matplotlib is missing; call before a long run that ends with plots."""
    _figure_class()


def _figure_class() -> Any:
    """matplotlib's Figure, imported lazily (an optional extra). A bare Figure writes its PNG through Agg without
    pyplot: no window, no display, and matplotlib's backend stays whatever the process chose (a notebook's)."""
    try:
        import matplotlib  # noqa: F401  (the package itself: a half-present install fails here)
        from matplotlib.figure import Figure  # no pyplot global state, nothing to close
    except ImportError:
        raise UserError(MISSING) from None
    return Figure


def _read_json(path: Path) -> dict:
    """A JSON file's object, or {} when the file is absent (an interrupted run has no summary)."""
    if not path.exists():
        return {}
    try:  # through the checked open: a FIFO put there is refused, not waited on
        return json.loads(read_checked(path, path.name, RECORD_MAX))
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None


def _read_metrics(run_dir: Path) -> list[dict]:
    """The eval rows of a run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"no metrics.jsonl in {run_dir}: is it the --out-dir of a training run?")
    try:
        text = read_checked(path, "metrics file", METRICS_MAX).decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as e:
        raise UserError(f"{path} has a line that is not JSON: {e}") from None
    if not rows:
        raise UserError(f"{path} has no rows yet: the run logged no evaluation")
    return rows


def _corpus(cfg: dict, what: str):
    """The corpus a run trained on, loaded as the run loaded it (text or token ids, split, counted)."""
    from bigram_jax.config import make_config
    from bigram_jax.corpus.load import load_corpus

    try:
        return load_corpus(make_config(cfg))
    except UserError as e:
        raise UserError(f"cannot recompute {what}: {e}") from None


def _floors(run_dir: Path) -> tuple[float, float]:
    """(train floor, val floor) from summary.json, else recomputed from the run's corpus (an interrupted run)."""
    from bigram_jax import evaluate

    summary = _read_json(run_dir / "summary.json")
    if "floor_train_loss" in summary and "floor_val_loss" in summary:
        return summary["floor_train_loss"], summary["floor_val_loss"]
    corpus = _corpus(_read_json(run_dir / "config.json"), f"the floors of {run_dir}")
    return evaluate.floor_train(corpus.train_counts), evaluate.floor_val(corpus.train_counts, corpus.val_counts)[0]


def _label(run_dir: Path) -> str:
    """A legend label: the directory name and the settings that tell runs apart."""
    cfg = _read_json(run_dir / "config.json")
    if not cfg:
        return run_dir.name
    sched = cfg.get("lr_schedule", "constant")
    return (f"{run_dir.name} ({sched} lr {cfg.get('learning_rate', '?'):g}, "
            f"B={cfg.get('batch_size')}, T={cfg.get('block_size')})")


def plot_losses(run_dirs: Sequence[Path], out: Path) -> Path:
    """Exact train (solid) and val (dashed) loss against step for each run, with the floors; writes `out`."""
    Figure = _figure_class()
    runs = [(Path(d), _read_metrics(Path(d))) for d in run_dirs]
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    full, zoom = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    floors: dict[tuple[float, float], None] = {}
    low, high, first = np.inf, -np.inf, np.inf
    for (run_dir, rows), color in zip(runs, colors):
        steps = [r["step"] for r in rows]
        tr, va = [r["train_loss"] for r in rows], [r["val_loss"] for r in rows]
        for ax in (full, zoom):
            ax.plot(steps, tr, "-", color=color, marker=".", label=f"{_label(run_dir)}: train")
            ax.plot(steps, va, "--", color=color, marker=".", label=f"{_label(run_dir)}: val")
        floors[tuple(round(f, 6) for f in _floors(run_dir))] = None  # runs on the same data share one floor
        tail = tr[len(tr) // 2:] + va[len(va) // 2:]  # the zoom shows the second half of every run
        low, high = min(low, *tail), max(high, *tail)
        first = min(first, steps[len(steps) // 2])
    for i, (ft, fv) in enumerate(floors):
        tag = f" ({i + 1})" if len(floors) > 1 else ""
        for ax in (full, zoom):
            ax.axhline(ft, color="black", ls=":", lw=1.2, label=f"train floor{tag}: {ft:.4f} (count table)")
            ax.axhline(fv, color="dimgray", ls="-.", lw=1.2, label=f"val floor{tag}: {fv:.4f} (smoothed train counts)")
        low, high = min(low, ft, fv), max(high, ft, fv)
    pad = 0.1 * (high - low) + 1e-3
    zoom.set_ylim(low - pad, high + pad)
    zoom.set_xlim(left=first - 0.02 * max(r[-1]["step"] for _, r in runs))
    full.set_title("exact loss over the whole split")
    zoom.set_title("zoom: the second half, against the bigram floor")
    for ax in (full, zoom):
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/char)")
        ax.grid(alpha=0.3)
    full.legend(fontsize=8, loc="upper right")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out


def show_char(ch: str) -> str:
    """A tick label that makes whitespace and control characters visible."""
    return {"\n": "\\n", " ": "␣", "\t": "\\t", "\r": "\\r"}.get(ch, ch if ch.isprintable() else repr(ch)[1:-1])


def tables(run_dir: Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    """(learned P(next|cur), count-based optimum from the train split, vocab, step) of a run's latest checkpoint."""
    from bigram_jax.checkpoint.load import (
        load_checkpoint,  # orbax: only when a checkpoint is read
    )
    from bigram_jax.model import table_of

    ck = load_checkpoint(run_dir)
    logits = np.asarray(table_of(ck.params), np.float64)
    learned = np.exp(logits - logits.max(axis=1, keepdims=True))
    learned /= learned.sum(axis=1, keepdims=True)
    corpus = _corpus(ck.config, f"the count optimum of {run_dir}")
    if corpus.sha256 != ck.meta.get("data_sha256"):
        raise UserError(f"the data file {corpus.path} changed since {run_dir} was trained (sha256 "
                        f"{corpus.sha256[:12]}... vs {str(ck.meta.get('data_sha256'))[:12]}...): "
                        "cannot recompute its count optimum")
    counts = corpus.train_counts.dense()
    rows = counts.sum(axis=1, keepdims=True)
    # a character never followed by anything in train (the last one) has no optimum: shown uniform
    optimum = np.where(rows > 0, counts / np.maximum(rows, 1), 1.0 / len(ck.vocab))
    return learned, optimum, ck.vocab, ck.step


def plot_transitions(run_dir: Path, out: Path) -> Path:
    """Three V x V heatmaps: learned P(next | current), the train-count optimum, and their difference."""
    Figure = _figure_class()
    from matplotlib.colors import PowerNorm, TwoSlopeNorm

    learned, optimum, vocab, step = tables(Path(run_dir))
    V = len(vocab)
    labels = [show_char(c) for c in vocab]
    fig = Figure(figsize=(20, 6.6), layout="constrained")
    axes = fig.subplots(1, 3)
    # sqrt scale: most probabilities are small, a linear scale would show little besides q -> u
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    diff = learned - optimum
    # clip the colour scale at the 99.5th percentile: the few rare-character rows (seen once or twice) would
    # otherwise use up the whole range and hide how the frequent rows differ
    top = float(np.abs(diff).max())
    lim = max(float(np.percentile(np.abs(diff), 99.5)), 1e-6)
    panels = [(learned, f"learned P(next | current), step {step}", "magma_r", norm, "neither"),
              (optimum, "count-based optimum (train split)", "magma_r", norm, "neither"),
              (diff, f"learned − optimum (colour clipped at ±{lim:.2g}; max |diff| {top:.2f})", "RdBu_r",
               TwoSlopeNorm(0.0, -lim, lim), "both" if top > lim else "neither")]
    size = 6 if V > 40 else 9
    for ax, (mat, title, cmap, nrm, extend) in zip(axes, panels):
        im = ax.imshow(mat, cmap=cmap, norm=nrm, interpolation="nearest")
        ax.set_title(title, fontsize=11)
        ax.set_xticks(range(V), labels, fontsize=size)
        ax.set_yticks(range(V), labels, fontsize=size)
        ax.tick_params(length=0, pad=1)
        ax.set_xlabel("next character")
        ax.set_ylabel("current character")
        fig.colorbar(im, ax=ax, shrink=0.8, pad=0.01, extend=extend)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out


def write_plots(run_dirs: Sequence[Path], out_dir: Path) -> list[Path]:
    """loss.png for all runs overlaid and transitions.png for the first run, in `out_dir`; returns the paths."""
    if not run_dirs:
        raise UserError("give at least one run directory")
    check_available()  # before reading checkpoints: a missing extra should fail fast
    out_dir = Path(out_dir)
    paths = [plot_losses(run_dirs, out_dir / LOSS_PNG)]
    cfg = _read_json(Path(run_dirs[0]) / "config.json")
    if str(cfg.get("data", "")).endswith((".bin", ".npy")):  # token ids: no characters, and V x V is too big to draw
        print(f"note: {run_dirs[0]} trained on token ids: no transitions.png", file=sys.stderr)
        return paths
    return paths + [plot_transitions(run_dirs[0], out_dir / TRANSITIONS_PNG)]


