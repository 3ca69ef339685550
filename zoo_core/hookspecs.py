"""Every hook a zoo plugin may implement, in one place.

Each hook receives a `register` callable and calls it once per item:

    @hookimpl
    def register_mixers(register: Register) -> None:
        register("hawk", HawkMixer, HawkConfig, "Griffin's RG-LRU recurrent block")

`register(name, factory, config_cls=None, description="")`. The core's own
defaults (the pre-norm block, cross-entropy head, byte tokenizer, corpus data
source) register through these same hooks.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol

from zoo_core import hookspec


class Register(Protocol):
    """The callable each hook receives; call it once per item the plugin provides."""

    def __call__(self, name: str, factory: Any, config_cls: Optional[type] = None,
                 description: str = "") -> None: ...


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
