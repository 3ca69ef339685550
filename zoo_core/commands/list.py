"""zoo list KIND: the registered items of one kind, or `zoo list specs`: the shipped comparison specs."""

from zoo_core.cli import table
from zoo_core.errors import UserError, did_you_mean
from zoo_core.registry import KINDS

#: What `zoo list` takes besides the registry's kinds: specs are package data, not registered.
LISTABLE = (*KINDS, "specs")


def list_specs() -> None:
    from pathlib import Path

    from zoo_core.compare import shipped_specs, spec_summary, specs_dir

    rows = [[name, spec_summary(f.read_text())] for name, f in shipped_specs().items()]
    print(table(rows, ["name", "description"]) if rows else "no specs shipped")
    where = Path(str(specs_dir()))
    print(f"\nrun one with: zoo compare NAME; to change one, copy it from {where} (docs/compare.md)")


def run(args) -> None:
    from zoo_core.registry import catalog

    if args.kind == "specs":
        return list_specs()
    if args.kind not in KINDS:
        raise UserError(
            f"cannot list '{args.kind}'{did_you_mean(args.kind, LISTABLE)} (choose one of: {', '.join(LISTABLE)})"
        )
    # names only (the cached catalog): no plugin, and no torch, is imported
    rows = [[e.name, e.distribution, e.description] for e in catalog().entries(args.kind)]
    print(table(rows, ["name", "distribution", "description"]) if rows else f"no {args.kind} installed")


def add_parser(sub) -> None:
    s = sub.add_parser("list", help="registered " + "|".join(KINDS) + ", or the shipped comparison specs")
    s.add_argument("kind", help=" | ".join(LISTABLE))
    s.set_defaults(fn=run)
