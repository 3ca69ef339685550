"""zoo data prepare SRC [--tokenizer NAME] [--out DIR]"""
from pathlib import Path


def prepare_cmd(args) -> None:
    from zoo_core.config import to_dataclass
    from zoo_core.data.shards import prepare, prepared_dir_for
    from zoo_core.registry import get_registry
    entry = get_registry().get("tokenizers", args.tokenizer)
    tok = entry.factory(to_dataclass({"name": args.tokenizer}, entry.config_cls))
    out = Path(args.out) if args.out else prepared_dir_for(args.src, tok, args.val_fraction, None)
    out = prepare(args.src, tok, out, args.val_fraction, args.text_field)
    print(f"prepared {args.src} -> {out}")


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="data preparation")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    s = dsub.add_parser("prepare", help="tokenize a corpus into memory-mapped shards")
    s.add_argument("src", help="a named corpus (shakespeare), a file or a directory")
    s.add_argument("--tokenizer", default="bytes")
    s.add_argument("--out", default=None)
    s.add_argument("--val-fraction", type=float, default=0.05)
    s.add_argument("--text-field", default="text")
    s.set_defaults(fn=prepare_cmd)
