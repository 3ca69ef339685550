"""The `zoo` command.

Each subcommand is a module in `zoo_core.commands` with `add_parser(sub)`;
the CLI discovers them, so adding a command touches no shared file.
Every user mistake ends as one line, `zoo: <problem and fix>`, with exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from typing import Callable, List, Optional, Sequence

from zoo_core.errors import (EXIT_FAILED, EXIT_INTERRUPTED, StoppedBeforeStart, UserError, did_you_mean,
                             disk_error_message, find_disk_error)


def _one_line_warnings() -> None:
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"zoo: warning: {message}", file=sys.stderr)
    warnings.showwarning = show
    # DCP says this on every single-process save/load; it is the intended mode there.
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")


def run_guarded(fn: Callable[[], object]) -> int:
    """Run a command; user errors become one line and exit 2, never a traceback."""
    _one_line_warnings()
    try:
        fn()
        return 0
    except UserError as exc:
        if str(exc):  # ranks other than 0 raise the same error without a message
            print(f"zoo: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted before training started; nothing was saved or changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StoppedBeforeStart as exc:
        import signal
        print(f"zoo: preempted: stopped by {signal.Signals(exc.signum).name} before training started; "
              f"nothing was saved or changed; run the same command again to start the run as it is", file=sys.stderr)
        return exc.exit_code
    except SystemExit:
        raise
    except Exception as exc:
        disk = find_disk_error(exc)
        if disk is not None:
            print(f"zoo: {disk_error_message(disk)}", file=sys.stderr)
            return EXIT_FAILED
        code = getattr(exc, "exit_code", None)
        if code is None and _lost_peer(exc):
            rank = os.environ.get("RANK", "?")
            print(f"zoo: rank {rank} stopped: another rank failed first (its message says why)", file=sys.stderr)
            return EXIT_FAILED
        if code is None:
            raise
        if str(exc):  # a collective stop prints its line once, on rank 0
            print(f"zoo: {exc}", file=sys.stderr)
        return code


def _lost_peer(exc: BaseException) -> bool:
    """Under torchrun: a collective that failed because another rank exited."""
    if "RANK" not in os.environ:
        return False
    import torch.distributed as dist
    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "remote worker"))


def table(rows: List[List[str]], header: List[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
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


def build_parser() -> argparse.ArgumentParser:
    import zoo_core.commands as commands
    p = Parser(prog="zoo", description="Language-model architecture research with plugins.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"zoo_core.commands.{mod}").add_parser(sub)
    return p


def parse(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = sorted(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        print(f"zoo: unknown command '{argv[0]}'{did_you_mean(argv[0], commands)} "
              f"(commands: {', '.join(commands)})", file=sys.stderr)
        return 2
    try:
        args = parse(parser, argv)
    except UsageError as exc:
        print(f"zoo: {exc}", file=sys.stderr)
        return 2
    if not getattr(args, "fn", None):
        parser.print_help()
        return 0 if not argv else 2
    return run_guarded(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
