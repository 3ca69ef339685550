"""Every hook a zoo plugin may implement, in one place.

Each hook receives a `register` callable and calls it once per item:

    @hookimpl
    def register_mixers(register):
        register("hawk", HawkMixer, HawkConfig, "Griffin's RG-LRU recurrent block")

`register(name, factory, config_cls=None, description="")`. The core's own
defaults (the pre-norm block, cross-entropy head, byte tokenizer, corpus data
source) register through these same hooks.
"""
from zoo_core import hookspec


@hookspec
def register_mixers(register):
    """Sequence mixers: `zoo_core.interfaces.Mixer` subclasses."""


@hookspec
def register_blocks(register):
    """Blocks composing norm, mixer, residual and MLP: `zoo_core.interfaces.Block`."""


@hookspec
def register_losses(register):
    """Loss/heads mapping final hidden states to a loss: `zoo_core.interfaces.Head`."""


@hookspec
def register_data_sources(register):
    """Data sources yielding token batches: `zoo_core.interfaces.DataSource`."""


@hookspec
def register_tokenizers(register):
    """Tokenizers: `zoo_core.interfaces.Tokenizer`."""


@hookspec
def register_presets(register):
    """Named model presets: `factory` is a dict of `model.*` overrides
    (for example a hybrid `pattern`), applied under the user's own settings."""


@hookspec
def register_exports(register):
    """Mappings to and from another library's checkpoint format: `zoo_core.interop.HFMapping`
    subclasses, registered by the plugin that owns the mixers they map, under the
    transformers `model_type` they write (`zoo export RUN --format hf`, `zoo import DIR`)."""
