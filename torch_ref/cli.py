"""Commands that move a table between bigram_jax checkpoints and torch state_dict (.pt) files."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bigram_jax.cli.guard import OneLineParser, command, guard, prog
from bigram_jax.config import make_config
from bigram_jax.errors import UserError


def _export(argv: Sequence[str] | None) -> int:
    """bigram_jax checkpoint -> torch state_dict file, and its tokenizer beside it (torch_ref/beside.py)."""
    p = OneLineParser(prog=prog("export_torch.py"), description="Write a checkpoint's table as a torch state_dict "
                      "(.pt), and beside it its tokenizer: nanoGPT's meta.pkl, a tokenizer.json or a tiktoken name, "
                      "and bigram-jax's record (FILE.bigram_jax.json), which import_torch.py reads.")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run's out-dir or its checkpoints folder")
    p.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    p.add_argument("--out", required=True, metavar="FILE.pt", help="where to write the state_dict")
    args = p.parse_args(argv)
    from bigram_jax.checkpoint.load import load_checkpoint
    from bigram_jax.corpus.tokenizers import from_record
    from torch_ref import beside
    from torch_ref.convert import save_torch_state_dict

    out = Path(args.out)
    beside.check_free(out)
    ck = load_checkpoint(args.checkpoint, args.step)
    # from the metadata as it is: rebuilding the tokenizer would need its library (and tiktoken's download)
    V = ck.meta["vocab_size"]
    record = ck.meta.get("tokenizer") or from_record(None, ck.vocab, V).record()
    files = beside.contents(record, V)  # all made before anything is written
    beside.check_free(out)  # (again: the checkpoint took a while to load)
    written: list[Path] = []
    try:
        save_torch_state_dict(ck.params, out)
        written.append(out)
        beside.write(out, files, written)
    except BaseException:
        for path in written:  # never half an export: a table without its tokenizer would be read as another's
            path.unlink(missing_ok=True)
        raise
    names = ", ".join(beside.path_of(out, s).name for s in files)
    print(f"wrote {out}: token_embedding_table.weight {V}x{V} from step {ck.step}; beside it {names}: its "
          f"tokenizer, {beside.described(record)}")
    return 0


def _import(argv: Sequence[str] | None) -> int:
    """torch state_dict file -> a bigram_jax checkpoint (step 0) that train.py --resume and sample.py accept."""
    p = OneLineParser(prog=prog("import_torch.py"), description="Make a bigram_jax checkpoint from a torch state_dict "
                      "(.pt); the tokenizer an export wrote beside it is used (and checked) with no flag.")
    p.add_argument("--state-dict", required=True, metavar="FILE.pt", help="torch_ref BigramLanguageModel state_dict")
    p.add_argument("--data", default="tinyshakespeare", help="the corpus the table was trained on (its vocabulary)")
    p.add_argument("--tokenizer", default="auto", help="the tokenizer of --data, as train.py's --tokenizer "
                   "(default: the one beside the .pt, else as train.py)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="new run directory for the checkpoint")
    args = p.parse_args(argv)

    from bigram_jax.checkpoint.manager import open_fresh
    from bigram_jax.checkpoint.resume import make_meta
    from bigram_jax.compile import programs
    from bigram_jax.corpus.load import load_corpus
    from bigram_jax.corpus.token_file import TOKEN_SUFFIXES
    from bigram_jax.model import table_of
    from bigram_jax.run.run_dir import RunDir
    from bigram_jax.store.run_folders import check_fresh, claim
    from bigram_jax.train import init_state
    from torch_ref import beside
    from torch_ref.convert import load_torch_state_dict, torch_to_flax

    check_fresh(Path(args.out_dir))  # before any reading: never a whole corpus encoded to be refused after
    found = beside.read(Path(args.state_dict))  # None: a .pt from elsewhere, read with --data and --tokenizer
    settings = {"data": args.data, "tokenizer": args.tokenizer, "out_dir": args.out_dir, "max_iters": 0}
    if found is not None:
        settings.update(found.overrides(Path(args.data).suffix not in TOKEN_SUFFIXES, args.tokenizer))
    cfg = make_config(settings)
    # before the corpus: a bad file, or a table of another size than its record's, is refused at once
    params = torch_to_flax(load_torch_state_dict(args.state_dict), found and found.vocab_size)
    corpus = load_corpus(cfg)
    if found is not None:
        found.check(corpus, args.data, explicit=args.tokenizer != "auto")
    V = corpus.vocab_size
    if table_of(params).shape[0] != V:
        raise UserError(f"{args.state_dict} holds a table of vocabulary size {table_of(params).shape[0]}, but "
                        f"--data {args.data} has a vocabulary of {V}")
    losses = corpus.exact_losses(params, run=programs.run)
    with claim(Path(cfg.out_dir), fresh=True), open_fresh(cfg) as ckpts:  # never over a run; locked
        RunDir(cfg, start_step=0)  # config.json and an empty metrics.jsonl, as a run at step 0 leaves
        ckpts.save(init_state(cfg, V, params=params), make_meta(cfg, corpus, *losses), losses[1])
    tok = f" ({corpus.tokenizer.describe()}, from {found.path.name})" if found is not None else ""
    print(f"wrote {ckpts.directory}/0: exact train loss {losses[0]:.4f}, val loss {losses[1]:.4f}{tok}")
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/export_torch.py."""
    return guard(prog("export_torch.py"), lambda: _export(argv))


def import_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/import_torch.py."""
    return guard(prog("import_torch.py"), lambda: _import(argv))


export_command = command(export_main)
import_command = command(import_main)
