"""zoo data prepare SRC --tokenizer NAME[:PATH] --out DIR  |  zoo data verify DIR  |  zoo data info DIR"""

from pathlib import Path


def prepare_cmd(args) -> None:
    from zoo_core.commands.tokenizer import tokenizer_from_spec
    from zoo_core.data.prepare import prepare
    from zoo_core.data.shards import prepared_dir_for, read_manifest
    from zoo_core.loop.metrics import on_terminal

    tok = tokenizer_from_spec(args.tokenizer, args.tokenizer_opt)
    out = Path(args.out) if args.out else prepared_dir_for(args.src, tok, args.val_fraction, None, args.text_field)
    out = prepare(
        args.src,
        tok,
        out,
        args.val_fraction,
        args.text_field,
        progress=on_terminal(),  # a bar on a terminal; off one (a Slurm log) no carriage returns
        workers=args.workers,
        shard_mb=args.shard_mb,
    )
    print(f"prepared {args.src} -> {out}")
    _summary(read_manifest(out))


def _summary(m) -> None:
    for split, info in m["splits"].items():
        bpt = info["bytes"] / max(info["tokens"], 1)
        print(
            f"  {split:5s} {info['tokens']:>14,} tokens  {info['documents']:>10,} documents  "
            f"{len(info['shards']):>5} shards  {bpt:.3f} bytes/token"
        )
    print(f"  tokenizer {m['tokenizer']}  vocab {m['vocab_size']}  dtype {m['dtype']}")


def verify_cmd(args) -> None:
    from zoo_core.data.shards import verify_dir

    counts = verify_dir(Path(args.dir))
    print(
        f"{args.dir}: {counts['shards']} shards, {counts['tokens']:,} tokens, "
        f"{counts['bytes_read'] / 2**20:,.1f} MB hashed: all sizes and sha256 match the manifest"
    )


def info_cmd(args) -> None:
    from zoo_core.data.shards import read_manifest

    m = read_manifest(Path(args.dir))
    print(f"{args.dir}: from {m['source']}")
    _summary(m)


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="prepare, verify and inspect token shards")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    s = dsub.add_parser("prepare", help="tokenize text/jsonl/parquet files or directories into memory-mapped shards")
    s.add_argument("src", help="a named corpus (shakespeare), a file or a directory")
    s.add_argument("--tokenizer", default="bytes", help="NAME or NAME:PATH, e.g. hf:tokenizer.json")
    s.add_argument(
        "--tokenizer-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another tokenizer option, e.g. pattern=REGEX for tiktoken",
    )
    s.add_argument("--out", default=None, help="output directory (default: the cache, $ZOO_CACHE/data)")
    s.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    s.add_argument("--shard-mb", type=float, default=64.0, help="MB of source text per shard")
    s.add_argument("--val-fraction", type=float, default=0.05)
    s.add_argument("--text-field", default="text", help="the jsonl/parquet field holding the text")
    s.set_defaults(fn=prepare_cmd)
    v = dsub.add_parser("verify", help="check every shard's size and sha256 against the manifest")
    v.add_argument("dir")
    v.set_defaults(fn=verify_cmd)
    i = dsub.add_parser("info", help="token, document and shard counts of a prepared directory")
    i.add_argument("dir")
    i.set_defaults(fn=info_cmd)
