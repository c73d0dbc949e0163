"""The device check's pages: DIR/device_check.md (every part: its figures, its checks, its failure) and the GPU
section of docs/benchmarks.md, which names the machine it measured. A run on the CPU writes the section that says
no GPU or TPU was measured: nothing here claims a figure that was not measured on the device it names.
"""
from __future__ import annotations

import datetime

from .markdown import titled_table
from .tables import eval_tables, generate_tables, secs, si, train_tables

BEGIN, END = "<!-- device_check: begin -->", "<!-- device_check: end -->"
NOT_MEASURED = ["## GPU and TPU", "", ("Not yet measured on a GPU or TPU: `python scripts/device_check.py --out DIR "
                "--docs`, run on one, writes this section.")]


def on_accelerator(doc: dict) -> bool:
    """Did this run measure a GPU or TPU (at full size)?"""
    return doc["machine"].get("backend") not in (None, "cpu") and not doc["quick"]


def machine_line(doc: dict) -> str:
    """The machine in one line: devices, JAX's memory, host, versions."""
    m = doc["machine"]
    if "versions" not in m:  # a failed part's figures hold its part_seconds alone
        return "the machine part failed: see its error below"
    v, mem, host = m["versions"], m.get("memory", {}), m["machine"]
    pool = f"; JAX's pool {mem['bytes_limit']:.1f} GiB" if "bytes_limit" in mem else ""
    cuda = f" (CUDA {m['torch_cuda_version']}, {m['torch_cuda']})" if m.get("torch_cuda") else ""
    total = f", {m['gpu_memory_gib']:.1f} GiB" if m.get("gpu_memory_gib") else ""
    return (f"{m['device_count']} x {m['device_kind']} ({m['backend']}, {m['platform_version']}{total}{pool}); host "
            f"{host['cpu']}, {host['cores']} cores, {host.get('memory_gib', 0):.0f} GiB; jax {v['jax']} / jaxlib "
            f"{v['jaxlib']}, torch {v['torch']}{cuda}")


def _check_text(checks: dict) -> str:
    return "; ".join(f"{k}: {'yes' if v else 'n/a' if v is None else '**no**'}" for k, v in checks.items())


def summary(doc: dict) -> list[str]:
    """One row a part: its status, time against its box, its checks, its error."""
    rows = [[name, p["status"], f"{p['seconds']:.0f} / {p['box_s']:.0f} s" if p["seconds"] else "-",
             _check_text(p["checks"]) or "-", (p["error"] or "").replace("|", "/").splitlines()[0][:200]
             if p["error"] else ""] for name, p in doc["parts"].items()]
    return titled_table("Parts", ["part", "status", "seconds / box", "checks", "error"], rows)


STEPS_TITLE = ("One-device steps, gather loss: time, peak memory (GiB, memory_stats) against memory.py's plan, "
               "bandwidth (GB/s: the bytes a step must move, over its time) against this device's copy bandwidth")
STEPS_HEADER = ["V", "B x T", "step", "tokens/s", "peak / plan", "peak, a save in flight",
                "peak after a 200-token sample", "step GB/s", "copy GB/s", "of copy", "compile + init"]


def _steps(*figures: dict) -> list[str]:
    """One table for both steps parts (each part's figures, in order): a row for each that measured steps."""
    gib = lambda x: "-" if x is None else f"{x:.2f}"
    rows = [[f"{f['vocab_size']:,}", f"{f['batch_size']}x{f['block_size']}", f"{f['step_ms']:.3g} ms",
             si(f["tokens_per_s"]), f"{gib(f['peak_gib'])} / {f['plan_gib']:.2f}", gib(f.get("peak_with_save_gib")),
             gib(f["peak_after_sample_gib"]), f"{f['bandwidth_GBps']:.4g}", f"{f['copy_GBps']:.4g}",
             f"{f['fraction_of_copy']:.0%}", f"{f['compile_s']:.3g} s"]
            for f in figures if "step_ms" in f]
    return titled_table(STEPS_TITLE, STEPS_HEADER, rows) if rows else []


def _job(f: dict) -> list[str]:
    keys = [k for k in f["cold"]["account_s"] if f["cold"]["account_s"][k] is not None]
    rows = [[k, secs(f[k]["wall_s"]), f[k]["xla_compiles"], ", ".join(f[k]["lowered"]) or "none",
             *(secs(f[k]["account_s"][a]) if f[k]["account_s"].get(a) is not None else "-" for a in keys)]
            for k in ("cold", "warm")]
    title = (f"The lecture's job ({f['steps']} steps): wall, what JAX compiled and lowered, the job's own account of "
             f"its time; {f['kept_programs']} programs kept")
    return titled_table(title, ["run", "wall", "XLA compiles", "lowered", *keys], rows)


def _resume(f: dict) -> list[str]:
    b, c = f["bit_exact"], f["cpu_fixture"]
    logged = next(v for k, v in c.items() if k.startswith("logged_at_step"))
    here, cpu = logged["device"], logged["cpu"]
    rows = [[f"{b['steps']} steps in one go against {b['steps'] // 2} + resume",
             (f"losses equal {b['rows_equal']}, state checksums equal {b['checksums_equal']}, table equal "
              f"{b['table_equal']}")],
            ["CPU checkpoint (f6817d1, step 20) restored here",
             f"checksums verified; exact losses differ from the CPU's by {c['exact_loss_diff']:.2g}"],
            [f"its resume, logged at step {here['step']}: here / CPU backend",
             (f"train {here['train_loss']:.7f} / {cpu['train_loss']:.7f}, val {here['val_loss']:.7f} / "
              f"{cpu['val_loss']:.7f} (max diff {c['max_abs_diff_vs_cpu']:.2g})")]]
    return titled_table("Resume", ["what", "result"], rows)


def _tests(f: dict) -> list[str]:
    failed = ", ".join(f["failed"]) or "none"
    title = f"Tests on {f['platform']}" + (", stopped at the part's time box" if f["timed_out"] else "")
    rows = [[", ".join(x.split("/")[-1] for x in f["files"]), f["passed"], f["skipped"], failed]]
    return titled_table(title, ["files", "passed", "skipped", "failed"], rows)


def _auto(f: dict) -> list[str]:
    rows = [[k, v.get("refused") or f"model_parallel {v['model_parallel']}, data on {v['data_on']}, loss "
             f"{v['loss']}, {v['planned_gib_per_device']:.1f} GiB planned per device"] for k, v in f["auto"].items()]
    return titled_table("What `auto` picks on this machine", ["job", "choice"], rows)


def body(doc: dict) -> list[str]:
    """Every part's tables (those that produced figures), after the summary."""
    p = {k: v["figures"] for k, v in doc["parts"].items() if v["figures"]}
    # (the parts a table draws on, the figure one of them must have, the table of their figures)
    tables = [(("machine",), "auto", _auto),
              (("train",), "train", lambda f: train_tables({"results": {"train": f["train"]}})),
              (("generate",), "generate", lambda f: generate_tables({"results": f})),
              (("eval",), "eval", lambda f: eval_tables({"results": f, "sizes": f["sizes"]})),
              (("steps_8k", "steps_50k"), "step_ms", _steps), (("job",), "cold", _job),
              (("resume",), "bit_exact", _resume), (("tests",), "files", _tests)]
    out = summary(doc)
    for parts, needs, table in tables:
        figures = [p.get(part, {}) for part in parts]
        if any(needs in f for f in figures):
            try:
                out += table(*figures)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:  # figures of an unforeseen shape
                out += ["", f"({parts[0]}: its table could not be drawn: {type(e).__name__}: {e}; see the JSON)"]
    return out


def report(doc: dict) -> str:
    """DIR/device_check.md."""
    head = ["# Device check", "", (f"Written by `python scripts/device_check.py{' --quick' if doc['quick'] else ''}` "
            f"on {datetime.date.today().isoformat()} in {doc['wall_s']:.0f} s (budget {doc['budget_s']:.0f} s), "
            f"every figure measured in this run on: {machine_line(doc)}.")]
    if doc["quick"]:
        head += ["", "**Smoke run (`--quick`): small sizes, figures not to be quoted.**"]
    torch_on = doc["parts"].get("train", {}).get("figures", {}).get("torch_device")
    head += [] if torch_on is None else ["", (f"torch's contenders ran on `{torch_on}`; \"lecture\" and \"tuned\" as "
                                              "in docs/benchmarks.md.")]
    return "\n".join(head + body(doc)) + "\n"


def section(doc: dict) -> str:
    """The GPU section of docs/benchmarks.md, between its markers (NOT_MEASURED unless a GPU or TPU was)."""
    if not on_accelerator(doc):
        return kept_section("")
    lines = ["## GPU and TPU", "", (f"Measured by `python scripts/device_check.py` on "
             f"{datetime.date.today().isoformat()} on {machine_line(doc)}; the whole report, with every figure, "
             "is the run's `device_check.md`.")]
    return "\n".join([BEGIN, *lines, *body(doc), END]) + "\n"


def kept_section(page: str) -> str:
    """The GPU section a page holds (a device check wrote it), else the one that says none was measured: the
    bench, rewriting the page on a CPU, keeps what only a device could measure."""
    if BEGIN in page and END in page:
        return page[page.index(BEGIN):page.index(END) + len(END)] + "\n"
    return "\n".join([BEGIN, *NOT_MEASURED, END]) + "\n"


def splice(page: str, block: str) -> str:
    """`page` with its GPU section replaced by `block` (appended where the page has none)."""
    if BEGIN in page and END in page:
        return page[:page.index(BEGIN)] + block.rstrip("\n") + page[page.index(END) + len(END):]
    return page.rstrip("\n") + "\n\n" + block
