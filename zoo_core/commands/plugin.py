"""Every built-in `zoo` subcommand: a default plugin (zoo_core.registry.DEFAULT_PLUGINS),
registered through `register_commands` like a third-party command.

The command modules import only argparse-level things at the top; each imports what it
runs (torch, the loop, a battery) inside its `run`, so `zoo train` starts as fast as before.
"""

import importlib

from zoo_core import hookimpl

zoo_api = 1

#: command name -> module in zoo_core.commands (its `add_parser(subparsers)` adds the parser).
BUILTIN_COMMANDS = {
    "check": "check",
    "compare": "compare",
    "config": "config",
    "data": "data",
    "eval": "eval",
    "export": "export",
    "generate": "generate",
    "import": "imports",
    "launch": "launch",
    "list": "list",
    "new-plugin": "new_plugin",
    "plugins": "plugins",
    "throughput": "throughput",
    "tokenizer": "tokenizer",
    "train": "train",
}


@hookimpl
def register_commands(register):
    for name, module_name in BUILTIN_COMMANDS.items():
        module = importlib.import_module(f"zoo_core.commands.{module_name}")
        doc = (module.__doc__ or "").strip().splitlines()
        register(name, module.add_parser, None, doc[0] if doc else "")
