"""A run's figures as markdown tables, one function per section; measured figures and their ratios only."""
from __future__ import annotations

from collections.abc import Callable

from .context import SAMPLERS
from .markdown import titled_table


def si(x: float) -> str:
    """A rate with a k/M/G suffix, 3 significant digits."""
    scale, prefix = next(((s, p) for s, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if abs(x) >= s), (1, ""))
    return f"{x / scale:.3g}{prefix}"


def secs(x: float) -> str:
    """A duration in us, ms or s."""
    return f"{x * 1e6:.3g} us" if x < 1e-3 else f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def times(a: float, b: float) -> str:
    """The ratio a / b as '12.3x'."""
    return f"{a / b:.3g}x"


def train_tables(doc: dict) -> list[str]:
    """Training tokens/s (and us per step) of every contender at each (B, T)."""
    names = ("jax_counts", "jax_gather", "torch_lecture", "torch_tuned", "torch_tuned_1thread")
    rows = [[k, *(f"{si(v[n]['tokens_per_s'])} ({v[n]['us_per_step']:.3g} us)" for n in names),
             times(v["jax_counts"]["tokens_per_s"], v["torch_lecture"]["tokens_per_s"]),
             times(v["jax_counts"]["tokens_per_s"], v["torch_tuned"]["tokens_per_s"])]
            for k, v in doc["results"]["train"].items()]
    header = ["B x T", "jax counts", "jax gather", "torch lecture", "torch tuned", "torch tuned, 1 thread",
              "counts / lecture", "counts / tuned"]
    return titled_table("Training: tokens/s (us per step)", header, rows)


def scale_tables(doc: dict) -> list[str]:
    """How training tokens/s and generation seconds grow with the work per call."""
    s = doc["results"]["scale"]
    rows = [[f"{k} ({v['B']}x{v['T']})", si(v["jax_counts"]), si(v["jax_gather"]), si(v["torch_tuned"]),
             times(v["jax_counts"], v["torch_tuned"])] for k, v in s["train_tokens_per_s"].items()]
    out = titled_table("How training cost grows: tokens/s", ["tokens/step (B x T)", "jax counts", "jax gather",
                       "torch tuned", "counts / tuned"], rows)
    lec, ours = dict(s["lecture_generate_s"]), s["generate_s"]
    rows = [[n, *(secs(ours[str(n)][f"jax_{k}"]) if str(n) in ours else "-" for k in SAMPLERS),
             secs(lec[n]) if n in lec else "not run"] for n in sorted({int(n) for n in ours} | set(lec))]
    title = (f"How generation cost grows: seconds for one sequence (t ~ n^p: jax cdf p = {s['ours_exponent']:.2f}, "
             f"lecture p = {s['lecture_exponent']:.2f}; the lecture's was stopped after {s['lecture_stopped_at']} "
             "tokens)")
    return out + titled_table(title, ["new tokens", "jax cdf", "jax categorical", "torch lecture"], rows)


def generate_tables(doc: dict) -> list[str]:
    """Generation seconds of each contender, one long and many short sequences."""
    rows = []
    for k, v in doc["results"]["generate"].items():
        t = v["seconds"]
        rows.append([k, secs(t["jax_cdf"]), secs(t["jax_categorical"]),
                     secs(t["torch_lecture"]) + (" (extrapolated)" if v["lecture_extrapolated"] else ""),
                     secs(t["torch_last_token"]), times(t["torch_lecture"], t["jax_cdf"]),
                     times(t["torch_lecture"], t["jax_categorical"]), times(t["torch_last_token"], t["jax_cdf"])])
    header = ["B x N", "jax cdf", "jax categorical", "torch lecture", "torch last-token", "lecture / cdf",
              "lecture / categorical", "last-token / cdf"]
    return titled_table("Generation: seconds", header, rows)


def eval_tables(doc: dict) -> list[str]:
    """Time and error of the exact evaluation against the estimates."""
    e, t = doc["results"]["eval"], doc["results"]["eval"]["seconds"]
    err = lambda k: "/".join(f"{e['estimate_abs_error_median'][k][p]:.2g}" for p in ("train", "val"))
    rounding = "/".join(f"{v:.1g}" for v in e["exact_vs_float64"].values())
    rows = [["jax exact, from counts", secs(t["jax_exact"]), f"none (float32 rounding {rounding})"],
            ["counting both splits, once a run", secs(t["count_splits"]), "-"],
            [f"jax {doc['sizes']['eval_iters']}-batch estimate", secs(t["jax_estimate"]), err("jax_estimate")],
            ["torch lecture estimate_loss", secs(t["torch_lecture"]), err("torch_lecture")],
            ["lecture / exact", times(t["torch_lecture"], t["jax_exact"]), ""]]
    return titled_table("Evaluation of both splits", ["method", "time", "abs. error vs exact (train/val, median)"],
                        rows)


def job_tables(doc: dict) -> list[str]:
    """Wall time and peak RSS of the two whole jobs."""
    j = doc["results"]["job"]
    rows = [[f"`{j['commands'][k]}`", secs(j[k]["wall_s"]), f"{j[k]['peak_rss_mib']:.0f} MiB"]
            for k in ("jax", "torch")]
    rows.append(["jax / torch", times(j["jax"]["wall_s"], j["torch"]["wall_s"]),
                 times(j["jax"]["peak_rss_mib"], j["torch"]["peak_rss_mib"])])
    title = (f"Whole job ({j['steps']} steps, eval every {j['eval_interval']}, {j['sample_tokens']} sampled tokens): "
             f"medians of {len(j['runs']['jax'])} alternated runs")
    return titled_table(title, ["process", "wall", "peak RSS"], rows)


def compile_tables(doc: dict) -> list[str]:
    """Compile and import seconds."""
    c = doc["results"]["compile"]
    rows = [[k, f"{v:.3g}"] for k, v in c.items() if k != "import_s"]
    rows += [[f"import {k}", f"{v:.3g}"] for k, v in c["import_s"].items()]
    return titled_table("Compile and import: seconds", ["what", "seconds"], rows)


def limits_tables(doc: dict) -> list[str]:
    """This machine's peak rates, and the counts step against the bounds they set."""
    r = doc["results"]["limits"]
    out = titled_table("This machine's measured peak rates", ["rate", "value"],
                       [[k, f"{v:.3g}"] for k, v in r["rates"].items()])
    cols = ("memory_bound_us", "compute_bound_us", "practical_floor_us", "measured_us")
    rows = [[k, si(v["bytes"]), si(v["flops"]), *(f"{v[f]:.3g} us" for f in cols),
             f"{v['fraction_of_bound']:.0%}", f"{v['fraction_of_floor']:.0%}"] for k, v in r["counts_step"].items()]
    header = ["B x T", "bytes", "flops", "memory bound", "compute bound", "practical floor", "measured",
              "bound / measured", "floor / measured"]
    return out + titled_table("The counts step against those limits", header, rows)


def corpus_tables(doc: dict) -> list[str]:
    """Whole runs against the corpus size: speed, peak memory, set-up (first run, then cached)."""
    r = doc["results"]["corpus"]
    rows = [[f"{int(n):,}", si(x["second"]["tokens_per_s"]), f"{r['speed_vs_smallest'][n]:.2f}",
             f"{x['first']['peak_rss_mib']:.0f} / {x['second']['peak_rss_mib']:.0f} MiB",
             f"{x['first']['corpus_s']:.2f} s / {x['second']['corpus_s']:.2f} s",
             f"{x['first']['wall_s']:.1f} s / {x['second']['wall_s']:.1f} s"] for n, x in r["runs"].items()]
    title = (f"Corpus size: whole runs, V = {r['vocab_size']}, B = {r['batch_size']}, T = {r['block_size']}, "
             f"{r['steps']} steps (first run / second run, cache warm)")
    header = ["tokens", "train tokens/s", "speed vs smallest", "peak RSS", "set-up (identity, counts)", "wall"]
    g = r["gpt2_vocab"]
    return titled_table(title, header, rows) + [
        "", (f"GPT-2-sized vocabulary: {g['tokens']:,} tokens with ids up to {g['vocab_size'] - 1:,}, loaded and "
            f"counted (sparse) in {g['wall_s']:.1f} s of process wall time, peak RSS {g['peak_rss_mib']:.0f} MiB.")]


STARTUP = {"job_warm": "the lecture's job (`python scripts/train.py`), compile cache warm",
           "job_cold_cache": "the same, compile cache empty (first run after install)",
           "help": "`train.py --help`", "bad_flag": "`train.py --bogus` (a flag error)",
           "sample_200": "`sample.py --checkpoint RUN --num-tokens 200`", "torch_job": "the lecture's torch job"}
BREAKDOWN = ("Where the lecture's job spends its time (its own account; before_job = interpreter start and imports, "
             "data = reading and tokenizing the corpus, counts = counting its transitions, job = everything from "
             "loading the corpus to the summary, exit = last line to process end)")


def startup_tables(doc: dict) -> list[str]:
    """What a user waits for, against the import floor; and where one whole job's time goes."""
    r = doc["results"]["startup"]
    rows = [[STARTUP[k], secs(v), f"{r['ratio_to_floor'][k]:.2f}x"] for k, v in r["seconds"].items()]
    rows.append(["jax job / torch job", "", f"{r['job_vs_torch']:.2f}x"])
    parts = [[k, secs(v)] for k, v in r["job_breakdown_s"].items()]
    title = f"Start-up: wall seconds, and ratios to `import jax, flax, optax` ({secs(r['floor_s'])})"
    return (titled_table(title, ["what", "wall", "/ import floor"], rows)
            + titled_table(BREAKDOWN, ["part", "seconds"], parts))


def tokenize_tables(doc: dict) -> list[str]:
    """A large text encoded with a BPE tokenizer.json: the library alone against bigram-jax's streaming encoding."""
    r = doc["results"]["tokenize"]
    first, second = r["first"], r["second"]
    rows = [[f"tokenizers' `encode_batch_fast` alone, 16 MB batches of {what}", f"{r['library_mb_per_s'][k]:.2f}",
             secs(x["encode_s"]), f"{x['peak_rss_mib']:.0f} MiB", f"{x['tokens']:,}"]
            for (k, x), what in zip(r["library"].items(), ("lines", "bigram-jax's items"))]
    rows += [["bigram-jax, first run: read, hash, cut, encode, write the cache", f"{r['ours_mb_per_s']:.2f}",
             secs(first["encode_s"]), f"{first['peak_rss_mib']:.0f} MiB", f"{first['tokens']:,}"],
             ["bigram-jax, second run: the corpus's set-up (cache warm)", "", secs(second["load_s"]),
             f"{second['peak_rss_mib']:.0f} MiB", f"{second['tokens']:,}"]]
    title = (f"Tokenizer: {r['text_mb']:.0f} MB of text, byte-level BPE of {r['bpe_vocab']} tokens, {r['cores']} "
             f"cores (ours / the library at its fastest: {r['ours_vs_library']:.2f}x the throughput)")
    return titled_table(title, ["what", "MB/s", "seconds", "peak RSS", "tokens"], rows)


def memory_tables(doc: dict) -> list[str]:
    """The step's bytes per parameter as XLA's memory analysis gives them, against the plan's; each loss at the
    lecture's batch; what that makes of GPT-2's vocabulary on one device."""
    r = doc["results"]["memory"]
    V, plan, lec = r["vocab_size"], r["plan"], r["lecture_batch"]
    rows = [["the state at the peak: table and both AdamW moments (donated: updated in place), one gradient",
             f"{r['state_bytes_per_param']:.3f} B/param", f"{plan['state_bytes_per_param']} B/param"],
            [("gather loss: copies of the logits it holds (float32, a chunk of at most 2048 positions x V): the "
             "logits and their gradient"), f"{r['gather_logits_copies']:.3f}", f"{plan['gather_logits_copies']}"],
            ["counts loss: its V x V work (the batch's counts, in float32)",
             f"{r['counts_work_bytes_per_param']:.3f} B/param", f"{plan['counts_work_bytes_per_param']} B/param"]]
    title = (f"The train step's memory: XLA's memory analysis of the compiled loop (the job's `train_steps`, state "
             f"donated) at V = {V:,}, compiled on the CPU, not run")
    out = titled_table(title, ["what", "measured", "devices/memory.py plans"], rows)
    P = r["params"]
    per = lambda x: f"{x / P:.3f}"
    logits = [f"{lec['logits_bytes_per_param']:.3f}", f"{lec['bound_bytes_per_param']:.3f}"]
    rows = [[loss, *(per(lec[loss][k]) for k in ("argument", "output", "alias", "temp", "peak")),
             *(logits if loss == "gather" else ["-", "-"])] for loss in ("gather", "counts")]
    out += titled_table(f"Each loss at the lecture's batch (B x T = {lec['B']} x {lec['T']}), V = {V:,}: bytes per "
                        "parameter (peak = argument + output - alias + temp)",
                        ["loss", "argument", "output", "alias", "temp", "peak", "logits", "16.5 + logits"], rows)
    g = r["gpt2"]
    total, room = g["state_bytes"] + g["logits_bytes"], 0.9 * 0.75 * 80e9  # memory.py's 90% of JAX's default pool
    return out + ["", (f"So at V = {g['vocab_size']:,} ({g['vocab_size'] ** 2 / 1e9:.2f} B parameters), B x T = "
                       f"{g['B']} x {g['T']}, gather loss (`auto` takes it there), one device holds "
                       f"{g['state_bytes'] / 1e9:.1f} GB of state and {g['logits_bytes'] / 1e9:.2f} GB of logits at "
                       f"the step's peak: {total / 1e9:.1f} GB, {'within' if total <= room else 'over'} the "
                       f"{room / 1e9:.0f} GB the plan allows an 80 GB GPU (90% of JAX's default pool, 75%).")]


def unbroken_tables(doc: dict) -> list[str]:
    """A text without a line break encoded and counted as a run loads it: its peak memory above all."""
    r = doc["results"]["unbroken"]
    title = (f"A text without line breaks: {r['text_mb']:.0f} MB on one line, byte-level BPE of {r['bpe_vocab']} tokens, "
             f"{r['cores']} cores (issue 28's budget for any 300 MB text: {r['budget_mib']:.0f} MiB)")
    if "error" in r:
        return titled_table(title, ["what", "result"], [["the corpus's set-up (encode into the cache, count)",
                                                         f"failed: {r['error'].replace('|', '/')}"]])
    rows = [["the corpus's set-up: read, hash, cut, encode into the cache, count", f"{r['peak_rss_mib']:.0f} MiB",
             secs(r["load_s"]), f"{r['mb_per_s']:.2f}", f"{r['tokens']:,}"]]
    return titled_table(title, ["what", "peak RSS", "seconds", "MB/s", "tokens"], rows)


def gpt2_bpe_tables(doc: dict) -> list[str]:
    """nanoGPT's shakespeare in GPT-2's BPE, trained with --compact-vocab as one process."""
    r = doc["results"]["gpt2_bpe"]
    title = "nanoGPT's shakespeare with GPT-2 BPE: `scripts/train.py --tokenizer NAME --compact-vocab`, one process"
    if "skipped" in r:
        return ["", f"### {title}", "", f"Skipped: {r['skipped']}."]
    of = f" of {r['ids_of']:,}" if r["ids_of"] else ""
    rows = [["tokenizer (tiktoken, from its cache)", r["tokenizer"]], ["ids used", f"{r['ids_used']:,}{of}"],
            ["B x T, steps, loss", f"{r['batch_size']} x {r['block_size']}, {r['steps']}, {r['loss']}"],
            ["train tokens/s", si(r["tokens_per_s"])], ["peak RSS", f"{r['peak_rss_mib']:.0f} MiB"],
            ["set-up: corpus (encode, count, compact) / compile", f"{secs(r['corpus_s'])} / {secs(r['compile_s'])}"],
            ["process wall", secs(r["wall_s"])],
            ["floors: train / val", f"{r['floor_train_loss']:.4f} / {r['floor_val_loss']:.4f}"],
            [f"losses at step {r['steps']}: train / val", f"{r['train_loss']:.4f} / {r['val_loss']:.4f}"]]
    return titled_table(title, ["what", "this run"], rows)


# In the order the page shows them: throughput first, then what explains it
TABLES: dict[str, Callable[[dict], list[str]]] = {
    "train": train_tables, "scale": scale_tables, "generate": generate_tables, "eval": eval_tables,
    "job": job_tables, "corpus": corpus_tables, "gpt2_bpe": gpt2_bpe_tables, "tokenize": tokenize_tables,
    "unbroken": unbroken_tables, "startup": startup_tables, "compile": compile_tables, "limits": limits_tables,
    "memory": memory_tables}
