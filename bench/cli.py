"""The bench command: parse flags, run the chosen sections, write the JSON and docs/benchmarks.md."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from bigram_jax.cli.guard import OneLineParser, command, guard, prog

from .outputs import check_file, write_text
from .paths import ROOT

SECTIONS = ("compile", "train", "scale", "generate", "eval", "job", "startup", "limits", "corpus",
            "tokenize", "memory", "unbroken", "gpt2_bpe")  # in the order they run
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"


def parser() -> OneLineParser:
    """The flags of scripts/bench.py."""
    p = OneLineParser(prog=prog("bench.py"), description="Benchmark bigram_jax against the lecture's torch code.")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of every section (~1 minute)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, help="timed blocks per figure (default: 5; 2 with --quick)")
    p.add_argument("--out", default="bench.json", help="the JSON of every figure (default: bench.json)")
    p.add_argument("--markdown", type=Path, help="the page of tables (default: docs/benchmarks.md for a full run; "
                   "a file in the temp folder with --quick or --only, so a partial run never replaces the page)")
    p.add_argument("--docs", action="store_true", help="also put the sections measured on their own that this run "
                   "measured (memory, unbroken, gpt2_bpe) in place in docs/benchmarks.md, the rest of the page as it is")
    return p


def markdown_path(args) -> Path:
    """Where the page goes: --markdown, else the committed page only when this run measured everything at size."""
    if args.markdown is not None:
        return args.markdown
    if args.quick or set(args.only.split(",")) != set(SECTIONS):
        return Path(tempfile.gettempdir()) / "bigram_jax_benchmarks.md"
    return DOCS_PAGE


def run(args) -> tuple[dict, Path]:
    """Run the chosen sections at the chosen sizes: (the run's JSON document, the corpus's path on this machine)."""
    # imported here, not at the top: --help and flag errors answer without loading JAX or torch
    from bigram_jax.config import Config
    from bigram_jax.corpus.load import load_corpus

    from .context import QUICK, Ctx, Sizes
    from .corpus_size import sec_corpus
    from .evaluation import sec_eval
    from .gpt2_bpe import sec_gpt2_bpe
    from .limits import sec_limits
    from .machine import describe
    from .sections import sec_compile, sec_generate, sec_scale, sec_train
    from .startup import sec_startup
    from .step_memory import sec_memory
    from .tokenize import sec_tokenize
    from .unbroken import sec_unbroken
    from .whole_job import sec_job

    fns = {"compile": sec_compile, "train": sec_train, "scale": sec_scale, "generate": sec_generate,
           "eval": sec_eval, "job": sec_job, "limits": sec_limits, "corpus": sec_corpus,
           "startup": sec_startup, "tokenize": sec_tokenize, "memory": sec_memory,
           "unbroken": sec_unbroken, "gpt2_bpe": sec_gpt2_bpe}
    sizes = QUICK if args.quick else Sizes()
    c = Ctx(sizes, args.repeats or (2 if args.quick else 5), load_corpus(Config()))
    load_start = os.getloadavg()
    for name in (s for s in SECTIONS if s in set(args.only.split(","))):
        t = time.perf_counter()
        c.results[name] = fns[name](c)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
    return {**describe(), "lecture_code": "torch_ref.model",
            "tuned_torch_batch": "torch_ref/baselines.py get_batch_fast", "quick": args.quick,
            "repeats": c.repeats, "sizes": asdict(sizes), "loadavg": {"start": load_start, "end": os.getloadavg()},
            "corpus": c.corpus.path.name, "results": c.results}, c.corpus.path


@contextlib.contextmanager
def _private_cache() -> Iterator[None]:
    """A per-user cache of the bench's own, empty at the start: compile figures measure compiles, not loads of
    programs an earlier run kept (the start-up section fills it first where it means to measure warm runs). The
    corpus is found first, where it already lies (BIGRAM_JAX_DATA, or the user's cache), and named for the run."""
    from bigram_jax.config import Config
    from bigram_jax.corpus.files import resolve_corpus

    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "BIGRAM_JAX_DATA")}
    corpus = str(resolve_corpus(Config().data))
    with tempfile.TemporaryDirectory() as cache:
        os.environ.update(XDG_CACHE_HOME=cache, BIGRAM_JAX_DATA=corpus)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _bench(argv: Sequence[str] | None) -> int:
    """Parse, run, write the JSON and the page, print the page."""
    import json

    p = parser()
    args = p.parse_args(argv)
    if set(args.only.split(",")) - set(SECTIONS) or (args.repeats is not None and args.repeats < 1):
        p.error(f"--only takes sections of {','.join(SECTIONS)}; --repeats must be >= 1")
    out, page = Path(args.out), markdown_path(args)
    check_file(out, "--out")  # before any section runs: a refusal after them would cost the whole run
    check_file(page, "--markdown")
    if args.docs:
        if args.quick:
            p.error("--docs puts measured figures in docs/benchmarks.md: not those of --quick")
        check_file(DOCS_PAGE, "--docs")
    with _private_cache():
        doc, corpus_path = run(args)
    write_text(out, json.dumps(doc, indent=2, default=float) + "\n")
    from .page import write, write_kept

    private = [corpus_path, Path.home(), Path.cwd(), out.parent, page.parent]
    print(write(doc, page, out, private))
    kept = write_kept(doc, DOCS_PAGE, private) if args.docs and page != DOCS_PAGE else []
    print(f"wrote {out} and {page}" + (f"; {', '.join(kept)} in {DOCS_PAGE}" if kept else ""), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/bench.py: user errors as one line on stderr."""
    return guard(prog("bench.py"), lambda: _bench(argv))


bench_command = command(main)
