"""zoo-deltanet: registers the `deltanet` and `gated_deltanet` mixers, the `gdn-hybrid` preset and
the gated_deltanet <-> transformers Qwen3NextForCausalLM mapping (`zoo export --format hf`, `zoo import`)."""

from zoo_core import hookimpl
from zoo_deltanet.mixer import DeltaNet, DeltaNetConfig, GatedDeltaNet, GatedDeltaNetConfig

zoo_api = 1

__all__ = ["DeltaNet", "DeltaNetConfig", "GatedDeltaNet", "GatedDeltaNetConfig"]

#: Gated DeltaNet hybrids (Yang et al. 2025; Qwen3-Next): three delta-rule layers, then one
#: (global) attention layer, repeated over model.n_layers.
GDN_HYBRID = {"pattern": ["gated_deltanet", "gated_deltanet", "gated_deltanet", "attention"]}


@hookimpl
def register_mixers(register):
    register(
        "deltanet",
        DeltaNet,
        DeltaNetConfig,
        "DeltaNet: delta-rule linear attention, conv4 + L2-normed q,k, sigmoid beta, chunked WY/UT form",
    )
    register(
        "gated_deltanet",
        GatedDeltaNet,
        GatedDeltaNetConfig,
        "Gated DeltaNet: the delta rule with Mamba-2's per-head decay, d_v = 2 d_k, chunked WY/UT form",
    )


@hookimpl
def register_presets(register):
    register(
        "gdn-hybrid",
        GDN_HYBRID,
        None,
        "Gated DeltaNet hybrid: [gated_deltanet x3, attention] repeated (needs zoo-attention)",
    )


@hookimpl
def register_exports(register):
    from zoo_deltanet.hf import Qwen3NextMapping

    register(
        "qwen3_next",
        Qwen3NextMapping,
        None,
        "gated_deltanet (every layer, SwiGLU MLP) <-> transformers Qwen3NextForCausalLM (linear_attention, dense MLPs)",
    )
