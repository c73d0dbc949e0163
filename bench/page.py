"""docs/benchmarks.md: the machine named, how the figures were taken, then every table; written, never hand-copied."""
from __future__ import annotations

import datetime
from pathlib import Path

from .device_page import kept_section, splice
from .markdown import titled_table
from .paths import scrub, shown
from .tables import tables


def machine_table(doc: dict) -> list[str]:
    """The machine and software a run measured, as a two-column table."""
    m, v = doc["machine"], doc["versions"]
    if doc["backend"] == "cpu":  # figures from a CPU say nothing about an accelerator: the page must not imply so
        accel = "none: not yet measured on a GPU or TPU"
    else:
        accel = f"{doc['device_count']} x {doc['device_kind']}"
    rows = [["CPU", m["cpu"]], ["cores", m["cores"]], ["memory", f"{m.get('memory_gib', 0):.1f} GiB"],
            ["platform", m["platform"]], ["Python", m["python"]],
            ["jax / jaxlib", f"{v['jax']} / {v['jaxlib']}"],
            ["flax / optax / orbax-checkpoint / numpy", " / ".join(v[n] for n in ("flax", "optax",
                                                                                  "orbax-checkpoint", "numpy"))],
            ["torch", f"{v['torch']}, {doc['torch_threads']['intra_op']} intra-op threads"],
            ["JAX backend", f"{doc['backend']}: {doc['device_count']} device(s) of kind `{doc['device_kind']}`"],
            ["GPU / TPU", accel]]
    return titled_table("Machine", ["what", "this run"], rows, level=2)


def method(doc: dict, json_name: str) -> list[str]:
    """How the figures were taken, so a reader can judge them (and the load they were taken under)."""
    load = doc["loadavg"]
    return ["", "## Method", "",
            f"Each figure is the median of {doc['repeats']} timed blocks after a warm-up, compile time kept apart "
            "and `block_until_ready` before every clock read. The contenders of one measurement are interleaved "
            "repeat by repeat, so on a shared, noisy machine the ratios of one run are the figures to quote. "
            f"Load average {load['start'][0]:.2f} at the start, {load['end'][0]:.2f} at the end.", "",
            f"\"lecture\" is the lecture's code ({doc['lecture_code']}); \"tuned\" and \"last-token\" are "
            f"the best plain torch found for the same work ({doc['tuned_torch_batch'].split()[0]}). "
            f"Every figure is also in `{json_name}`."]


def render(doc: dict, json_name: str) -> str:
    """The whole page for `doc` (a bench run's JSON)."""
    today = datetime.date.today().isoformat()
    head = ["# Benchmarks", "",
            f"Written by `python scripts/bench.py` on {today}: rerun it to regenerate this page, do not edit by hand.",
            f"Sections: {', '.join(doc['results'])}."]
    if doc["quick"]:  # a smoke run's tiny sizes: their figures measure overheads, not the library
        head += ["", "**Smoke run (`--quick`): tiny sizes, figures not to be quoted.**"]
    return "\n".join(head + machine_table(doc) + method(doc, json_name) + ["", "## Results"] + tables(doc)) + "\n"


def write(doc: dict, path: Path, json_path: Path, private: list[str | Path]) -> str:
    """Write the page to `path`; every path in `private` (absolute paths of this machine) shown repo-relative."""
    text = scrub(render(doc, shown(json_path)), private)
    text = splice(text, kept_section(path.read_text() if path.exists() else ""))  # the device check's section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
