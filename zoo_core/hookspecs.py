"""Every hook a zoo plugin may implement, in one place.

Each hook receives a `register` callable and calls it once per item:

    @hookimpl
    def register_mixers(register: Register) -> None:
        register("hawk", HawkMixer, HawkConfig, "Griffin's RG-LRU recurrent block")

`register(name, factory, config_cls=None, description="")`. The core's own
defaults (the pre-norm block, cross-entropy head, tokenizers, data sources,
trackers and every `zoo` subcommand: `zoo_core.registry.DEFAULT_PLUGINS`)
register through these same hooks.
"""

from __future__ import annotations

from typing import Any, Protocol

from zoo_core import hookspec


class Register(Protocol):
    """The callable each hook receives; call it once per item the plugin provides."""

    def __call__(self, name: str, factory: Any, config_cls: type | None = None, description: str = "") -> None: ...


@hookspec
def register_mixers(register: Register) -> None:
    """Sequence mixers: `zoo_core.interfaces.Mixer` subclasses."""


@hookspec
def register_blocks(register: Register) -> None:
    """Blocks composing norm, mixer, residual and MLP: `zoo_core.interfaces.Block`."""


@hookspec
def register_losses(register: Register) -> None:
    """Loss/heads mapping final hidden states to a loss: `zoo_core.interfaces.Head`."""


@hookspec
def register_data_sources(register: Register) -> None:
    """Data sources yielding token batches: `zoo_core.interfaces.DataSource`."""


@hookspec
def register_tokenizers(register: Register) -> None:
    """Tokenizers: `zoo_core.interfaces.Tokenizer`."""


@hookspec
def register_presets(register: Register) -> None:
    """Named model presets: `factory` is a dict of `model.*` overrides
    (for example a hybrid `pattern`), applied under the user's own settings."""


@hookspec
def register_exports(register: Register) -> None:
    """Mappings to and from another library's checkpoint format: `zoo_core.interop.HFMapping`
    subclasses, registered by the plugin that owns the mixers they map, under the
    transformers `model_type` they write (`zoo export RUN --format hf`, `zoo import DIR`)."""


@hookspec
def register_trackers(register: Register) -> None:
    """Metric mirrors beside metrics.jsonl (TensorBoard, wandb, ...): `zoo_core.interfaces.Tracker`
    subclasses. The loop opens every tracker whose `wanted(cfg)` is true on rank 0."""


@hookspec
def register_commands(register: Register) -> None:
    """`zoo` subcommands: `register(name, add_parser, None, description)`, where
    `add_parser(subparsers)` adds the `zoo NAME` parser (`subparsers.add_parser(NAME, help=...)`)
    and sets its `fn` default to a function of the parsed args. A `zoo_core.errors.UserError`
    raised there ends as one line `zoo: ...` with exit status 2. Every built-in command
    registers through this hook too (`zoo_core.commands.plugin`)."""
