"""Commands that move a table between bigram_jax checkpoints and torch state_dict (.pt) files."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from bigram_jax.cli.guard import OneLineParser, command, guard, prog
from bigram_jax.config import make_config
from bigram_jax.errors import UserError


def _export(argv: Sequence[str] | None) -> int:
    """bigram_jax checkpoint -> torch state_dict file."""
    p = OneLineParser(prog=prog("export_torch.py"), description="Write a checkpoint's table as a torch state_dict (.pt).")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run's out-dir or its checkpoints folder")
    p.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    p.add_argument("--out", required=True, metavar="FILE.pt", help="where to write the state_dict")
    args = p.parse_args(argv)
    from bigram_jax.checkpoint.load import load_checkpoint
    from bigram_jax.corpus.tokenizers import describe_record, from_record
    from torch_ref.convert import save_torch_state_dict

    ck = load_checkpoint(args.checkpoint, args.step)
    out = Path(args.out)
    beside = out.with_suffix(".tokenizer.json")  # what the ids mean: the checkpoint's tokenizer, as recorded
    for path in (out, beside):
        if os.path.lexists(path):  # a link too, dangling or not: nothing is written through one
            raise UserError(f"{path} exists; choose another --out (nothing was changed)")
    # from the metadata as it is: rebuilding the tokenizer would need its library (and tiktoken's download)
    V = ck.meta["vocab_size"]
    record = ck.meta.get("tokenizer") or from_record(None, ck.vocab, V).record()
    save_torch_state_dict(ck.params, out)
    tmp = beside.with_name(f".{beside.name}.partial")  # written whole, then renamed, as the .pt
    tmp.write_text(json.dumps({"vocab_size": V, "tokenizer": record}) + "\n")  # (\\u escapes: any character)
    tmp.replace(beside)
    print(f"wrote {out}: token_embedding_table.weight {V}x{V} from step {ck.step}; and {beside}: its tokenizer, "
          f"{describe_record(ck.meta.get('tokenizer'), ck.vocab)}")
    return 0


def _import(argv: Sequence[str] | None) -> int:
    """torch state_dict file -> a bigram_jax checkpoint (step 0) that train.py --resume and sample.py accept."""
    p = OneLineParser(prog=prog("import_torch.py"), description="Make a bigram_jax checkpoint from a torch state_dict (.pt).")
    p.add_argument("--state-dict", required=True, metavar="FILE.pt", help="torch_ref BigramLanguageModel state_dict")
    p.add_argument("--data", default="tinyshakespeare", help="the corpus the table was trained on (its vocabulary)")
    p.add_argument("--tokenizer", default="auto", help="the tokenizer of --data, as train.py's --tokenizer")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="new run directory for the checkpoint")
    args = p.parse_args(argv)

    from bigram_jax.checkpoint.manager import open_fresh
    from bigram_jax.checkpoint.resume import make_meta
    from bigram_jax.compile import programs
    from bigram_jax.corpus.load import load_corpus
    from bigram_jax.run.run_dir import RunDir
    from bigram_jax.store.run_folders import claim
    from bigram_jax.train import init_state
    from torch_ref.convert import load_torch_state_dict, torch_to_flax

    cfg = make_config({"data": args.data, "tokenizer": args.tokenizer, "out_dir": args.out_dir, "max_iters": 0})
    corpus = load_corpus(cfg)
    V = corpus.vocab_size
    params = torch_to_flax(load_torch_state_dict(args.state_dict), vocab_size=V)
    losses = corpus.exact_losses(params, run=programs.run)
    with claim(Path(cfg.out_dir), fresh=True), open_fresh(cfg) as ckpts:  # never over a run; locked
        RunDir(cfg, start_step=0)  # config.json and an empty metrics.jsonl, as a run at step 0 leaves
        ckpts.save(init_state(cfg, V, params=params), make_meta(cfg, corpus, *losses), losses[1])
    print(f"wrote {ckpts.directory}/0: exact train loss {losses[0]:.4f}, val loss {losses[1]:.4f}")
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/export_torch.py."""
    return guard(prog("export_torch.py"), lambda: _export(argv))


def import_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/import_torch.py."""
    return guard(prog("import_torch.py"), lambda: _import(argv))


export_command = command(export_main)
import_command = command(import_main)
