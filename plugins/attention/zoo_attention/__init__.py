"""zoo-attention: registers the `attention` mixer and its Hugging Face mapping (LlamaForCausalLM)."""

from zoo_attention.mixer import Attention, AttentionConfig
from zoo_core import hookimpl

zoo_api = 1


@hookimpl
def register_mixers(register):
    register(
        "attention",
        Attention,
        AttentionConfig,
        "multi-head causal attention: GQA, RoPE, optional sliding window, KV cache",
    )


@hookimpl
def register_exports(register):
    from zoo_attention.hf import LlamaMapping

    register("llama", LlamaMapping, None, "attention <-> transformers LlamaForCausalLM (q/k rows permuted for RoPE)")
