"""zoo-hawk: registers the `hawk` mixer, the `griffin` preset and the Hugging Face mapping
(RecurrentGemmaForCausalLM)."""

from zoo_core import hookimpl
from zoo_hawk.mixer import Hawk, HawkConfig

zoo_api = 1

#: Griffin (De et al. 2024): two recurrent blocks, then one local MQA block, repeated.
#: The paper's local attention window is 1024 tokens.
GRIFFIN = {"pattern": ["hawk", "hawk", {"name": "attention", "window": 1024, "n_kv_heads": 1}]}


@hookimpl
def register_mixers(register):
    register(
        "hawk",
        Hawk,
        HawkConfig,
        "Hawk (Griffin's recurrent block): GeLU gate x (conv4 -> RG-LRU), c=8, decay in [0.9, 0.999]",
    )


@hookimpl
def register_presets(register):
    register(
        "griffin",
        GRIFFIN,
        None,
        "Griffin hybrid: [hawk, hawk, local MQA attention (window 1024)] repeated (needs zoo-attention)",
    )


@hookimpl
def register_exports(register):
    from zoo_hawk.hf import RecurrentGemmaMapping

    register(
        "recurrent_gemma",
        RecurrentGemmaMapping,
        None,
        "hawk (+ local attention, griffin) <-> transformers RecurrentGemmaForCausalLM",
    )
