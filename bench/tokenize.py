"""The tokenizer section: a large text encoded with a BPE tokenizer.json, by the tokenizers library's own batch
encoding (the bound: the same library on the same cores, in memory, nothing else) and by bigram-jax's streaming
encoding into its cache (reading, hashing, cutting lines, writing the token file); then a second run's set-up.

The tokenizer is trained here on the corpus (byte-level BPE, as GPT-2's; no download) and the text is the corpus
repeated, written in chunks. Each contender runs in a process of its own, so its peak RSS is its own.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from .context import Ctx
from .paths import ROOT
from .timing import run_process

BPE_VOCAB = 8192
PIECE = 16 << 20  # bytes of whole lines the library is given per batch call (its throughput, not our reads')

# the library alone: the text in pieces of whole lines, each piece one batch call of its lines ('lines') or of
# the items bigram-jax would send ('items'); only the calls are timed
LIBRARY = """
import json, sys, time
from pathlib import Path
from tokenizers import Tokenizer
from bigram_jax.corpus.text_file import batch_items
tok, n, spent, at = Tokenizer.from_file(sys.argv[1]), 0, 0.0, 0
with open(sys.argv[2], encoding="utf-8") as f:
    while True:
        lines = f.readlines({piece})
        if not lines:
            break
        batch = lines if sys.argv[3] == "lines" else batch_items("".join(lines), at, True, Path(sys.argv[2]))[0]
        at += sum(map(len, lines))
        t = time.perf_counter()
        n += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
        spent += time.perf_counter() - t
json.dump({{"encode_s": spent, "tokens": n}}, open(sys.argv[4], "w"))
"""

# bigram-jax: the streaming encoding into the cache (a first run), then the rest of a corpus load (the counts)
OURS = """
import json, sys, time
from pathlib import Path
from bigram_jax.corpus import text_file
from bigram_jax.corpus import tokenizers
from bigram_jax.config import make_config
from bigram_jax.corpus.load import load_corpus
path, t = Path(sys.argv[2]), time.perf_counter()
if sys.argv[3] == "first":
    text_file.encode_to_cache(path, path.stat(), tokenizers.named(sys.argv[1]))
t1 = time.perf_counter()
c = load_corpus(make_config({"data": str(path), "tokenizer": sys.argv[1]}))
json.dump({"encode_s": t1 - t, "load_s": time.perf_counter() - t1, "tokens": len(c.train) + len(c.val)},
          open(sys.argv[4], "w"))
"""


def _tokenizer(corpus_text: str, path: Path) -> None:
    """A byte-level BPE tokenizer.json trained on the corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([corpus_text], trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.save(str(path))


def _text(corpus_text: str, path: Path, mb: int) -> int:
    """The corpus repeated to at least `mb` MB, written a copy at a time; its size in bytes."""
    raw, size = corpus_text.encode(), 0
    with open(path, "wb") as f:
        while size < mb * 1e6:
            f.write(raw)
            size += len(raw)
    return size


def _child(code: str, args: list[str], env: dict) -> dict:
    """Run `code` in a process of its own: its figures, wall seconds and peak RSS."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        wall, rss = run_process([sys.executable, "-c", code, *args, out.name], env)
        return {**json.loads(Path(out.name).read_text()), "wall_s": wall, "peak_rss_mib": rss}


def sec_tokenize(c: Ctx) -> dict:
    """MB/s of the library's batch encoding and of ours (the ratio is the figure), peak RSS, second set-up."""
    corpus_text = c.corpus.path.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        tok, text = Path(tmp) / "tokenizer.json", Path(tmp) / "big.txt"
        _tokenizer(corpus_text, tok)
        size = _text(corpus_text, text, c.sizes.tokenize_mb)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": f"{tmp}/cache"}
        library = {k: _child(LIBRARY.format(piece=PIECE), [str(tok), str(text), k], env) for k in ("lines", "items")}
        first = _child(OURS, [str(tok), str(text), "first"], env)
        second = _child(OURS, [str(tok), str(text), "second"], env)
    mb, best = size / 1e6, min(x["encode_s"] for x in library.values())  # the library at its fastest
    return {"text_mb": mb, "bpe_vocab": BPE_VOCAB, "cores": os.cpu_count(), "library": library, "first": first,
            "second": second, "ours_mb_per_s": mb / first["encode_s"],
            "library_mb_per_s": {k: mb / x["encode_s"] for k, x in library.items()},
            "ours_vs_library": best / first["encode_s"]}
