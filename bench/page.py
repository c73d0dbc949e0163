"""docs/benchmarks.md: the machine named, how the figures were taken, then every table; written, never hand-copied."""
from __future__ import annotations

import datetime
from pathlib import Path

from .device_page import BEGIN, kept_section, splice
from .markdown import titled_table
from .outputs import write_text
from .paths import scrub, shown
from .tables import TABLES

# Sections measured on their own (`--only memory --docs`, named in cli.py's --docs help): each is a block of the page
# between its markers, naming the machine and versions it was measured with; a run that did not measure it keeps
# the page's block as it was
KEPT = ("memory", "unbroken", "gpt2_bpe")


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
            (f"Each figure is the median of {doc['repeats']} timed blocks after a warm-up, compile time kept apart "
            "and `block_until_ready` before every clock read. The contenders of one measurement are interleaved "
            "repeat by repeat, so on a shared, noisy machine the ratios of one run are the figures to quote. "
            f"Load average {load['start'][0]:.2f} at the start, {load['end'][0]:.2f} at the end."), "",
            (f"\"lecture\" is the lecture's code ({doc['lecture_code']}); \"tuned\" and \"last-token\" are "
            f"the best plain torch found for the same work ({doc['tuned_torch_batch'].split()[0]}). "
            f"Every figure is also in `{json_name}`.")]


def _marks(name: str) -> tuple[str, str]:
    return f"<!-- bench {name}: begin -->", f"<!-- bench {name}: end -->"


def measured_by(doc: dict, name: str) -> str:
    """The line that names where and with what a kept section was measured."""
    m, v = doc["machine"], doc["versions"]
    accel = "; not yet measured on a GPU or TPU" if doc["backend"] == "cpu" else ""
    return (f"Measured by `python scripts/bench.py --only {name}{' --quick' if doc['quick'] else ''}` on "
            f"{datetime.date.today().isoformat()}: {m['cpu']}, {m['cores']} cores, {m.get('memory_gib', 0):.1f} GiB; "
            f"Python {m['python']}, jax {v['jax']} / jaxlib {v['jaxlib']}; JAX backend {doc['backend']}{accel}."
            + (" **Smoke run (`--quick`): figures not to be quoted.**" if doc["quick"] else ""))


def block(doc: dict, name: str) -> str:
    """A kept section's block: its tables, the line naming the machine, between its markers."""
    begin, end = _marks(name)
    return "\n".join([begin, *TABLES[name](doc)[1:], "", measured_by(doc, name), end])


def kept_block(page: str, name: str) -> str | None:
    """The block of section `name` a page holds, if any."""
    begin, end = _marks(name)
    if begin in page and end in page:
        return page[page.index(begin):page.index(end) + len(end)]
    return None


def splice_block(page: str, name: str, text: str) -> str:
    """`page` with the block of `name` replaced by `text`; a page without one gets it before the GPU section."""
    old = kept_block(page, name)
    if old is not None:
        return page.replace(old, text)
    at = page.find(BEGIN)
    return (page[:at] + text + "\n\n" + page[at:]) if at >= 0 else page.rstrip("\n") + "\n\n" + text + "\n"


def results(doc: dict, old_page: str) -> list[str]:
    """The tables of every section, in the page's order: a kept section's block, measured now or as it was."""
    out = []
    for name, fn in TABLES.items():
        if name in KEPT:
            text = block(doc, name) if name in doc["results"] else kept_block(old_page, name)
            out += ["", *text.splitlines()] if text else []
        elif name in doc["results"]:
            out += fn(doc)
    return out


def render(doc: dict, json_name: str, old_page: str = "") -> str:
    """The whole page for `doc` (a bench run's JSON); the kept sections it did not measure come from `old_page`."""
    today = datetime.date.today().isoformat()
    head = ["# Benchmarks", "",
            f"Written by `python scripts/bench.py` on {today}: rerun it to regenerate this page, do not edit by hand.",
            f"Sections: {', '.join(doc['results'])}."]
    if doc["quick"]:  # a smoke run's tiny sizes: their figures measure overheads, not the library
        head += ["", "**Smoke run (`--quick`): tiny sizes, figures not to be quoted.**"]
    return "\n".join(head + machine_table(doc) + method(doc, json_name) + ["", "## Results"]
                     + results(doc, old_page)) + "\n"


def write(doc: dict, path: Path, json_path: Path, private: list[str | Path]) -> str:
    """Write the page to `path`; every path in `private` (absolute paths of this machine) shown repo-relative."""
    old = path.read_text() if path.exists() else ""
    text = scrub(render(doc, shown(json_path), old), private)
    text = splice(text, kept_section(old))  # the device check's section
    write_text(path, text)
    return text


def write_kept(doc: dict, path: Path, private: list[str | Path]) -> list[str]:
    """`--docs`: the kept sections this run measured, each put in place in the page at `path`; their names."""
    names = [n for n in KEPT if n in doc["results"]]
    page = path.read_text() if path.exists() else ""
    for name in names:
        page = splice_block(page, name, scrub(block(doc, name), private))
    write_text(path, page)
    return names
