"""zoo tokenizer train --vocab N FILES... --out tok.json  |  zoo tokenizer info NAME[:PATH]"""

from collections.abc import Sequence
from pathlib import Path

from zoo_core.errors import UserError


def tokenizer_from_spec(spec: str, options: Sequence[str] = ()):
    """A tokenizer from `NAME`, `NAME:PATH` (path=PATH) and `key=value` options, checked like a config."""
    from zoo_core.config import to_dataclass, validate_options
    from zoo_core.registry import get_registry

    name, _, path = spec.partition(":")
    opts = {"name": name, **({"path": path} if path else {})}
    for item in options:
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"tokenizer option '{item}' is not key=value; write it like pattern='\\S+'")
        opts[key] = value
    entry = get_registry().get("tokenizers", name)
    return entry.factory(to_dataclass(validate_options("tokenizer", opts, entry.config_cls), entry.config_cls))


def train_cmd(args) -> None:
    from zoo_core.tokenizers.training import export_tiktoken, train_bpe

    out = train_bpe(args.files, args.vocab, Path(args.out), args.text_field, args.min_frequency)
    tok = tokenizer_from_spec(f"hf:{out}")
    print(
        f"trained a byte-level BPE of {tok.vocab_size} tokens -> {out}  (use: data.tokenizer={{name: hf, path: {out}}})"
    )
    if args.tiktoken:
        export_tiktoken(out, Path(args.tiktoken))
        print(f"tiktoken ranks -> {args.tiktoken}  (use: data.tokenizer={{name: tiktoken, path: {args.tiktoken}}})")


def info_cmd(args) -> None:
    tok = tokenizer_from_spec(args.spec, args.opt)
    print(f"vocab_size {tok.vocab_size}  bos_id {tok.bos_id}  eos_id {tok.eos_id}  fingerprint {tok.fingerprint}")
    if args.text is not None:
        ids = tok.encode(args.text)
        print(f"{len(ids)} tokens: {ids}")
        print(f"decoded: {tok.decode(ids)!r}")


def add_parser(sub) -> None:
    t = sub.add_parser("tokenizer", help="train or inspect tokenizers")
    tsub = t.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    s = tsub.add_parser("train", help="train a byte-level BPE offline (Hugging Face tokenizers)")
    s.add_argument("files", nargs="+", help="text/jsonl/parquet files, directories or named corpora")
    s.add_argument("--vocab", type=int, required=True, help="vocabulary size, including the 256 bytes")
    s.add_argument("--out", default="tokenizer.json")
    s.add_argument("--text-field", default="text", help="the jsonl/parquet field holding the text")
    s.add_argument("--min-frequency", type=int, default=2)
    s.add_argument("--tiktoken", default=None, metavar="RANKS", help="also write a tiktoken ranks file")
    s.set_defaults(fn=train_cmd)
    i = tsub.add_parser("info", help="vocabulary size, special ids and fingerprint of a tokenizer")
    i.add_argument("spec", help="NAME or NAME:PATH, e.g. bytes, hf:tokenizer.json, sentencepiece:m.model")
    i.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="another tokenizer option")
    i.add_argument("--text", default=None, help="also encode and decode this text")
    i.set_defaults(fn=info_cmd)
