"""One module per `zoo` subcommand, each with `add_parser(subparsers)`; `plugin.py` registers
them all through the `register_commands` hook (a default plugin)."""
