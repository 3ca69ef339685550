"""The `zoo` command.

Every subcommand is registered through the `register_commands` hook: the built-in
ones by the default plugin `zoo_core.commands.plugin`, others by any installed plugin.
A built-in command is dispatched from a registry of that plugin alone (no torch, no
third-party imports: `zoo train` starts as fast as before); `zoo --help`, `zoo` and any
other name load every plugin, so a third-party command is found and listed.
Every user mistake ends as one line, `zoo: <problem and fix>`, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from zoo_core.errors import UserError, did_you_mean
from zoo_core.loop.guard import _lost_peer, _one_line_warnings, run_guarded  # noqa: F401  (zoo_core.cli.run_guarded is public)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header).rstrip(), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*[str(c) for c in r]).rstrip() for r in rows]
    return "\n".join(lines)


def split_config(items: Sequence[str]):
    """`[CONFIG] key=value ...` -> (CONFIG or None, overrides)."""
    items = list(items)
    config = items.pop(0) if items and "=" not in items[0] else None
    return config, items


class UsageError(Exception):
    """argparse's complaint, to be printed as one line."""


class Parser(argparse.ArgumentParser):
    """One line on a usage mistake (argparse would print the usage block, then exit)."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}; see {self.prog} --help")


#: The default plugin holding the built-in commands (zoo_core.registry.DEFAULT_PLUGINS lists it).
BUILTIN_COMMANDS_PLUGIN = "zoo_core.commands.plugin"


def command_registry(argv: Sequence[str]) -> Any:
    """The registry to build the parser from. A built-in command, `zoo` and `zoo --help` use
    the built-in commands alone (no torch, no plugin imported: as fast as before); any other
    name loads every plugin, so that a third-party command runs (or a typo gets a suggestion)."""
    from zoo_core.registry import DEFAULT_PLUGINS, build_registry, get_registry

    if BUILTIN_COMMANDS_PLUGIN in DEFAULT_PLUGINS:
        light = build_registry(default_plugins=(BUILTIN_COMMANDS_PLUGIN,), entry_points=False)
        if not argv or argv[0].startswith("-") or argv[0] in light.names("commands"):
            return light
    return get_registry()


def version() -> str:
    """`zoo <version> (torch <version>)`, from package metadata: imports no torch."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    from zoo_core import __version__

    try:
        torch_version = dist_version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return f"zoo {__version__} (torch {torch_version})"


def build_parser(registry: Any = None) -> argparse.ArgumentParser:
    """`zoo`'s parser, one subparser per registered command."""
    if registry is None:
        from zoo_core.registry import get_registry

        registry = get_registry()
    p = Parser(
        prog="zoo",
        description="Language-model architecture research with plugins.",
        epilog="Plugins may add commands: zoo plugins lists every installed plugin and its commands.",
    )
    p.add_argument("--version", action="store_true", help="print zoo's and torch's versions")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for entry in registry.entries("commands"):
        entry.factory(sub)
    for name, _claimants in registry.conflicts("commands").items():

        def refuse(args, _name=name):
            raise UserError(registry.conflict_message("commands", _name))

        sub.add_parser(name, help="(registered twice: see zoo plugins)").set_defaults(fn=refuse)
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Options and `key=value` overrides in any order: a command's own parser reads its
    arguments intermixed (`zoo train model.dim=32 --nproc 2 cfg.yaml` is fine)."""
    choices = parser._subparsers._group_actions[0].choices if parser._subparsers else {}  # type: ignore[union-attr]
    if not argv or argv[0] not in choices:
        return parser.parse_args(argv)
    sub = choices[argv[0]]
    if sub._subparsers is not None:  # data prepare, tokenizer train: their own subcommands
        args = sub.parse_args(argv[1:])
    else:
        args = sub.parse_intermixed_args(argv[1:])
    args.command = argv[0]
    return args


def main(argv: Sequence[str] | None = None, registry: Any = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(registry if registry is not None else command_registry(argv))
    commands = sorted(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        print(
            f"zoo: unknown command '{argv[0]}'{did_you_mean(argv[0], commands)} (commands: {', '.join(commands)})",
            file=sys.stderr,
        )
        return 2
    try:
        args = parse(parser, argv)
    except UsageError as exc:
        print(f"zoo: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "version", False) and not getattr(args, "fn", None):
        print(version())
        return 0
    if not getattr(args, "fn", None):
        parser.print_help()
        return 0 if not argv else 2
    return run_guarded(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
