"""zoo-attention: registers the `attention` mixer."""
from zoo_core import hookimpl

from zoo_attention.mixer import Attention, AttentionConfig

zoo_api = 1


@hookimpl
def register_mixers(register):
    register("attention", Attention, AttentionConfig,
             "multi-head causal attention: GQA, RoPE, optional sliding window, KV cache")
