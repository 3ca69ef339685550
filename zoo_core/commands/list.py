"""zoo list KIND: the registered items of one kind."""

from zoo_core.cli import table
from zoo_core.errors import UserError, did_you_mean
from zoo_core.registry import KINDS


def run(args) -> None:
    from zoo_core.registry import get_registry

    if args.kind not in KINDS:
        raise UserError(
            f"cannot list '{args.kind}'{did_you_mean(args.kind, KINDS)} (choose one of: {', '.join(KINDS)})"
        )
    rows = [[e.name, e.distribution, e.description] for e in get_registry().entries(args.kind)]
    print(table(rows, ["name", "distribution", "description"]) if rows else f"no {args.kind} installed")


def add_parser(sub) -> None:
    s = sub.add_parser("list", help="registered " + "|".join(KINDS))
    s.add_argument("kind")
    s.set_defaults(fn=run)
