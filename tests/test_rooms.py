"""zoo_core in rooms: old module paths are the same module objects, the default plugins
register through the hooks and show in `zoo plugins`, and a plugin can add a `zoo` command."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

import zoo_core
from zoo_core import hookimpl
from zoo_core._aliases import ALIASES
from zoo_core.cli import main
from zoo_core.errors import UserError
from zoo_core.registry import DEFAULT_PLUGINS, Registry, build_registry


@pytest.mark.parametrize("old, new", sorted(ALIASES.items()))
def test_every_old_path_is_the_same_module_object(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert sys.modules[old] is sys.modules[new]
    assert sys.modules[new].__spec__.name == new  # the alias did not take the module's own spec
    parent, _, child = old.rpartition(".")
    assert getattr(importlib.import_module(parent), child) is sys.modules[new]


def test_the_documented_api_keeps_working_by_its_old_names():
    from zoo_core.blocks import RMSNorm, SwiGLU, swiglu_hidden  # noqa: F401  (plugins import these)
    from zoo_core.launch import torchrun_command
    from zoo_core.loop.runs import load_run as new_load_run
    from zoo_core.runs import load_run
    from zoo_core.tokenizers.files import require  # noqa: F401

    assert load_run is new_load_run
    assert torchrun_command(2, "zoo_core.train", ["a=1"])[-2:] == ["zoo_core.train", "a=1"]


def test_monkeypatching_an_old_path_patches_the_module(monkeypatch):
    import zoo_core.loop.train as train

    monkeypatch.setattr("zoo_core.train.seed_everything", "patched")
    assert train.seed_everything == "patched"


def test_python_dash_m_old_path_runs_the_module(tmp_path):
    """What `zoo train --nproc` asks torchrun to run: `python -m zoo_core.train` (an alias)."""
    out = subprocess.run(
        [sys.executable, "-m", "zoo_core.train", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("zoo: config file") and "Traceback" not in out.stderr


def test_default_plugins_register_through_the_hooks_and_are_listed(capsys):
    reg = build_registry(entry_points=False)
    assert len(DEFAULT_PLUGINS) == 6
    assert sorted(reg.plugins) == [
        "zoo-core.blocks",
        "zoo-core.commands",
        "zoo-core.data",
        "zoo-core.losses",
        "zoo-core.tokenizers",
        "zoo-core.trackers",
    ]
    assert reg.get("blocks", "prenorm").plugin == "zoo-core.blocks"
    assert reg.get("losses", "cross_entropy").plugin == "zoo-core.losses"
    assert reg.get("data", "corpus").plugin == "zoo-core.data"
    assert reg.get("tokenizers", "bytes").plugin == "zoo-core.tokenizers"
    assert sorted(reg.names("trackers")) == ["tensorboard", "wandb"]
    assert {"train", "list", "plugins", "compare", "eval"} <= set(reg.names("commands"))
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "zoo-core.blocks" in out and "blocks: prenorm" in out and "commands: check" in out


def test_a_missing_default_plugin_leaves_the_others_working():
    with pytest.warns(UserWarning, match="zoo-core.nowhere"):
        reg = build_registry(default_plugins=("zoo_core.defaults.blocks", "zoo_core.nowhere"), entry_points=False)
    assert reg.names("blocks") == ["prenorm"]
    assert "zoo-core.nowhere" in reg.failed


def test_a_third_party_block_can_replace_a_default_one(monkeypatch):
    monkeypatch.setenv("ZOO_PREFER", "my-blocks")
    mine = types.ModuleType("my_blocks")
    mine.register_blocks = hookimpl(lambda register: register("prenorm", object, None, "mine"))
    reg = Registry()
    reg.add_plugin(importlib.import_module("zoo_core.defaults.blocks"), "zoo-core.blocks", "zoo-core", "0")
    reg.add_plugin(mine, "my-blocks", "my-blocks", "1.0")
    reg.collect()
    assert reg.get("blocks", "prenorm").description == "mine"


def _hello_plugin() -> types.ModuleType:
    """A third-party plugin, as small as one can be: it adds `zoo hello [--fail]`."""
    mod = types.ModuleType("zoo_hello")

    def run(args):
        if args.fail:
            raise UserError("hello failed on purpose; drop --fail")
        print(f"hello, {args.who}")

    def add_parser(sub):
        s = sub.add_parser("hello", help="say hello")
        s.add_argument("who", nargs="?", default="zoo")
        s.add_argument("--fail", action="store_true")
        s.set_defaults(fn=run)

    @hookimpl
    def register_commands(register):
        register("hello", add_parser, None, "say hello")

    mod.register_commands = register_commands
    return mod


def _registry_with_hello() -> Registry:
    reg = Registry()
    reg.add_plugin(
        importlib.import_module("zoo_core.commands.plugin"), "zoo-core.commands", "zoo-core", zoo_core.__version__
    )
    reg.add_plugin(_hello_plugin(), "hello", "zoo-hello", "0.1")
    reg.collect()
    return reg


def test_a_plugin_adds_a_command(capsys):
    reg = _registry_with_hello()
    assert main(["hello", "world"], registry=reg) == 0
    assert capsys.readouterr().out == "hello, world\n"
    assert main(["hello", "--fail"], registry=reg) == 2
    assert capsys.readouterr().err == "zoo: hello failed on purpose; drop --fail\n"
    with pytest.raises(SystemExit) as exit_:
        main(["--help"], registry=reg)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "hello" in out and "train" in out


def test_an_unknown_command_names_the_registered_ones(capsys):
    assert main(["helo"], registry=_registry_with_hello()) == 2
    assert "did you mean 'hello'" in capsys.readouterr().err


def test_zoo_help_and_a_builtin_command_import_no_torch_and_no_plugin():
    code = (
        "import sys\nfrom zoo_core.cli import command_registry, build_parser\n"
        "for argv in (['--help'], ['train', 'x=1'], []):\n"
        "    build_parser(command_registry(argv))\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m == 'torch' or m.startswith('zoo_') and '.' not in m and m != 'zoo_core'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_zoo_check_zoo_core_still_checks_every_default_item():
    """`zoo check zoo-core` names a distribution that now holds one plugin per kind."""
    from zoo_core.testing import check_target

    reg = build_registry(entry_points=False)
    assert check_target("zoo-core", registry=reg) == [
        ("blocks", "prenorm"),
        ("losses", "cross_entropy"),
        ("data", "corpus"),
        ("data", "mixture"),
        ("data", "mqar"),
    ]
    assert check_target("zoo-core.losses", registry=reg) == [("losses", "cross_entropy")]


def test_the_launcher_imports_no_torch():
    """A Slurm task unpickles `zoo_core.launch.TrainTask` and sets its signal handlers in `__call__`;
    if importing the launcher pulled torch in, a preemption signal during that import would kill the task."""
    code = "import sys, zoo_core.launch\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
