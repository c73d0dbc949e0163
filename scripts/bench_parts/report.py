"""The issue's goals against a run's figures, and the run as markdown tables."""
from __future__ import annotations

from .context import SAMPLERS, Sizes


def goals(r: dict, sizes: Sizes) -> list[dict]:
    """The issue's goals whose sections ran: the target, this run's figure, met or not."""
    out = []
    add = lambda goal, figure, met: out.append({"goal": goal, "figure": figure, "met": bool(met)})  # noqa: E731
    if "32x8" in r.get("train", {}):
        x = r["train"]["32x8"]
        k, us = x["jax_counts"]["tokens_per_s"] / x["torch_lecture"]["tokens_per_s"], x["jax_counts"]["us_per_step"]
        add("train 32x8: >= 40x the lecture's torch loop, < 15 us/step", f"{k:.3g}x, {us:.3g} us/step",
            k >= 40 and us < 15)
    if "512x256" in r.get("train", {}):
        x = {n: v["tokens_per_s"] for n, v in r["train"]["512x256"].items()}
        k, k1 = x["jax_counts"] / x["torch_tuned"], x["jax_counts"] / x["torch_tuned_1thread"]
        add("train 512x256: >= 200x the tuned torch loop, >= 500M tokens/s",
            f"{k:.3g}x ({k1:.3g}x vs torch on 1 thread), {si(x['jax_counts'])} tokens/s",
            k >= 200 and x["jax_counts"] >= 5e8)
    if f"1x{sizes.gen_one}" in r.get("generate", {}):
        s = r["generate"][f"1x{sizes.gen_one}"]["seconds"]
        k = {x: s["torch_lecture"] / s[f"jax_{x}"] for x in SAMPLERS}
        add(f"generate 1x{sizes.gen_one}: >= 100x the lecture's generate",
            ", ".join(f"{x} {v:.3g}x" for x, v in k.items()), max(k.values()) >= 100)
    if "job" in r:
        add("whole lecture job: <= 0.35x the torch job's wall time", f"{r['job']['wall_ratio']:.3g}x",
            r["job"]["wall_ratio"] <= 0.35)
    if "eval" in r:
        k = r["eval"]["seconds"]["torch_lecture"] / r["eval"]["seconds"]["jax_exact"]
        e = max(r["eval"]["exact_vs_float64"].values())
        add("exact eval: >= 100x the lecture's estimate, no sampling error",
            f"{k:.3g}x; exact (float32 rounding {e:.1g})", k >= 100)
    return out


def si(x: float) -> str:
    """3 significant digits with a k/M/G prefix."""
    scale, prefix = next(((s, p) for s, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if abs(x) >= s), (1, ""))
    return f"{x / scale:.3g}{prefix}"


def secs(x: float) -> str:
    """A duration in us, ms or s."""
    return f"{x * 1e6:.3g} us" if x < 1e-3 else f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def times(a: float, b: float) -> str:
    """The ratio a / b as '12.3x'."""
    return f"{a / b:.3g}x"


def md(title: str, headers: list[str], rows: list[list]) -> list[str]:
    """A titled markdown table."""
    return ["", f"**{title}**", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def report(doc: dict) -> str:
    """The run's figures as markdown tables."""
    r, m = doc["results"], doc["machine"]
    out = [f"bigram_jax bench on {m['cpu']} ({m['cores']} cores, {m.get('memory_gib', 0):.0f} GiB): "
           f"jax {doc['versions']['jax']} ({doc['backend']}), torch {doc['versions']['torch']} "
           f"({doc['torch_threads']['intra_op']} threads); medians of {doc['repeats']}; "
           f"load average {doc['loadavg']['start'][0]:.2f} at start, {doc['loadavg']['end'][0]:.2f} at end"]
    if "train" in r:
        names = ("jax_counts", "jax_gather", "torch_lecture", "torch_tuned", "torch_tuned_1thread")
        rows = [[k, *(f"{si(v[n]['tokens_per_s'])} ({v[n]['us_per_step']:.3g} us)" for n in names),
                 times(v["jax_counts"]["tokens_per_s"], v["torch_lecture"]["tokens_per_s"]),
                 times(v["jax_counts"]["tokens_per_s"], v["torch_tuned"]["tokens_per_s"])]
                for k, v in r["train"].items()]
        out += md("Training: tokens/s (us per step)", ["B x T", "jax counts", "jax gather", "torch lecture",
                  "torch tuned", "torch tuned, 1 thread", "counts / lecture", "counts / tuned"], rows)
    if "scale" in r:
        s = r["scale"]
        rows = [[f"{k} ({v['B']}x{v['T']})", si(v["jax_counts"]), si(v["jax_gather"]), si(v["torch_tuned"]),
                 times(v["jax_counts"], v["torch_tuned"])] for k, v in s["train_tokens_per_s"].items()]
        out += md("How training cost grows: tokens/s", ["tokens/step (B x T)", "jax counts", "jax gather",
                  "torch tuned", "counts / tuned"], rows)
        lec, ours = dict(s["lecture_generate_s"]), s["generate_s"]
        rows = [[n, *(secs(ours[str(n)][f"jax_{k}"]) if str(n) in ours else "-" for k in SAMPLERS),
                 secs(lec[n]) if n in lec else "not run"] for n in sorted({int(n) for n in ours} | set(lec))]
        out += md(f"How generation cost grows: seconds for one sequence (t ~ n^p: jax cdf p = "
                  f"{s['ours_exponent']:.2f}, lecture p = {s['lecture_exponent']:.2f}; the lecture's was stopped "
                  f"after {s['lecture_stopped_at']} tokens)", ["new tokens", "jax cdf", "jax categorical",
                  "torch lecture"], rows)
    if "generate" in r:
        rows = []
        for k, v in r["generate"].items():
            t = v["seconds"]
            rows.append([k, secs(t["jax_cdf"]), secs(t["jax_categorical"]),
                         secs(t["torch_lecture"]) + (" (extrapolated)" if v["lecture_extrapolated"] else ""),
                         secs(t["torch_last_token"]), times(t["torch_lecture"], t["jax_cdf"]),
                         times(t["torch_lecture"], t["jax_categorical"]), times(t["torch_last_token"], t["jax_cdf"])])
        out += md("Generation: seconds", ["B x N", "jax cdf", "jax categorical", "torch lecture", "torch last-token",
                  "lecture / cdf", "lecture / categorical", "last-token / cdf"], rows)
    if "eval" in r:
        e, t = r["eval"], r["eval"]["seconds"]
        err = lambda k: "/".join(f"{e['estimate_abs_error_median'][k][p]:.2g}" for p in ("train", "val"))  # noqa
        rounding = "/".join(f"{v:.1g}" for v in e["exact_vs_float64"].values())
        out += md("Evaluation of both splits", ["method", "time", "abs. error vs exact (train/val, median)"], [
            ["jax exact, from counts", secs(t["jax_exact"]), f"none (float32 rounding {rounding})"],
            ["counting both splits, once a run", secs(t["count_splits"]), "-"],
            [f"jax {doc['sizes']['eval_iters']}-batch estimate", secs(t["jax_estimate"]), err("jax_estimate")],
            ["torch lecture estimate_loss", secs(t["torch_lecture"]), err("torch_lecture")],
            ["lecture / exact", times(t["torch_lecture"], t["jax_exact"]), ""]])
    if "job" in r:
        j = r["job"]
        out += md(f"Whole job ({j['steps']} steps, eval every {j['eval_interval']}, {j['sample_tokens']} sampled "
                  f"tokens): medians of {len(j['runs']['jax'])} alternated runs", ["process", "wall", "peak RSS"],
                  [*([j["commands"][k], secs(j[k]["wall_s"]), f"{j[k]['peak_rss_mib']:.0f} MiB"]
                     for k in ("jax", "torch")),
                   ["jax / torch", times(j["jax"]["wall_s"], j["torch"]["wall_s"]),
                    times(j["jax"]["peak_rss_mib"], j["torch"]["peak_rss_mib"])]])
    if "compile" in r:
        c = r["compile"]
        out += md("Compile and import: seconds", ["what", "seconds"], [[k, f"{v:.3g}"] for k, v in c.items()
                  if k != "import_s"] + [[f"import {k}", f"{v:.3g}"] for k, v in c["import_s"].items()])
    if "limits" in r:
        out += md("This machine's measured peak rates", ["rate", "value"],
                  [[k, f"{v:.3g}"] for k, v in r["limits"]["rates"].items()])
        cols = ("memory_bound_us", "compute_bound_us", "practical_floor_us", "measured_us")
        out += md("The counts step against those limits", ["B x T", "bytes", "flops", "memory bound", "compute bound",
                  "practical floor", "measured", "bound / measured", "floor / measured"],
                  [[k, si(v["bytes"]), si(v["flops"]), *(f"{v[f]:.3g} us" for f in cols),
                    f"{v['fraction_of_bound']:.0%}", f"{v['fraction_of_floor']:.0%}"]
                   for k, v in r["limits"]["counts_step"].items()])
    if doc["goals"]:
        out += md("Goals", ["goal", "this run", "met"],
                  [[g["goal"], g["figure"], "yes" if g["met"] else "**no**"] for g in doc["goals"]])
    return "\n".join(out)
