"""attention <-> transformers LlamaForCausalLM (`zoo export --format hf`, `zoo import`).

One difference needs care: zoo's RoPE rotates interleaved pairs (x[2i], x[2i+1]),
Llama's rotates halves (x[i], x[i + hd/2]), both with frequency theta^(-2i/hd).
Permuting the rows of every q and k head (even rows first, then odd) turns one
into the other; q.k is unchanged, so the logits are equal.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from zoo_core import interop
from zoo_core.errors import UserError
from zoo_core.interop import HFMapping, Weights

ACTS = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh"}  # zoo block.mlp_act -> transformers hidden_act


def rope_rows(head_dim: int, rotated: int | None = None) -> Tensor:
    """Llama's row order for one head, as zoo rows: [0, 2, 4, ..., 1, 3, 5, ...] over the
    `rotated` first dims (all by default), the rest in place."""
    r = head_dim if rotated is None else rotated
    return torch.cat([torch.arange(0, r, 2), torch.arange(1, r, 2), torch.arange(r, head_dim)])


def to_halves(w: Tensor, head_dim: int, rotated: int | None = None) -> Tensor:
    return w.view(-1, head_dim, w.shape[-1])[:, rope_rows(head_dim, rotated)].reshape(w.shape)


def to_pairs(w: Tensor, head_dim: int, rotated: int | None = None) -> Tensor:
    return w.view(-1, head_dim, w.shape[-1])[:, torch.argsort(rope_rows(head_dim, rotated))].reshape(w.shape)


def unmapped_position(a: dict[str, Any]) -> str | None:
    """Attention options that neither Llama nor RecurrentGemma has (both rotate q and k, no input conv)."""
    if a.get("position", "rope") != "rope":
        return f"model.mixer.position={a['position']}: the HF attentions use RoPE only; position=rope maps"
    if a.get("conv"):
        return (
            f"model.mixer.conv={a['conv']} (a short conv before q, k, v) has no HF attention counterpart; conv=0 maps"
        )
    return None


def attention_shape(dim: int, opts: dict[str, Any]) -> tuple[int, int, int]:
    hd = opts["head_dim"]
    heads = opts.get("n_heads") or max(1, dim // hd)
    return heads, opts.get("n_kv_heads") or heads, hd


class LlamaMapping(HFMapping):
    mixers = ("attention",)
    model_types = ("llama",)
    architecture = "LlamaForCausalLM"

    def refuse(self, m: Any) -> str | None:
        why = interop.refuse_shared(m, "Llama")
        if why:
            return why
        a, block, loss = interop.mixer_options(m)[0], interop.section(m, "block"), interop.section(m, "loss")
        if a.get("window"):
            return (
                f"model.mixer.window={a['window']} (sliding window) has no LlamaForCausalLM counterpart; "
                "full causal attention (window unset) maps"
            )
        if block.get("mlp") is False:
            return "model.block.mlp=false: every Llama layer has an MLP; model.block.mlp=true (or unset) maps"
        if block.get("mlp_act") not in ACTS:
            return f"model.block.mlp_act={block.get('mlp_act')} has no Llama hidden_act; silu or gelu_tanh maps"
        if loss.get("logit_softcap"):
            return f"model.loss.logit_softcap={loss['logit_softcap']} has no Llama counterpart; 0 (off) maps"
        if unmapped_position(a):
            return unmapped_position(a)
        if a.get("rope_fraction", 1.0) != 1.0:
            return f"model.mixer.rope_fraction={a['rope_fraction']} (partial RoPE) has no Llama counterpart; 1.0 maps"
        if a.get("out_bias"):
            return (
                "model.mixer.out_bias=true has no Llama counterpart "
                "(its attention_bias covers q, k, v and o); false maps"
            )
        return None

    def to_hf(self, m: Any, w: Weights) -> tuple[dict[str, Any], Weights]:
        opts, block = interop.mixer_options(m)[0], interop.section(m, "block")
        heads, kv, hd = attention_shape(m.dim, opts)
        config = dict(
            **interop.hf_sizes(m),
            intermediate_size=w["layers.0.mlp.w_out.weight"].shape[1],
            num_attention_heads=heads,
            num_key_value_heads=kv,
            head_dim=hd,
            hidden_act=ACTS[block["mlp_act"]],
            rms_norm_eps=float(m.norm_eps),
            rope_parameters={"rope_type": "default", "rope_theta": float(opts["rope_theta"])},
            max_position_embeddings=4096,
            attention_bias=False,
            mlp_bias=bool(block.get("mlp_bias")),
        )
        out = interop.ends_to_hf(m, w, "model.embed_tokens.weight", "model.norm.weight")
        for i in range(m.n_layers):
            z, h = f"layers.{i}.", f"model.layers.{i}."
            k, v = w[z + "mixer.wkv.weight"].split(kv * hd)
            out.update(
                {
                    h + "input_layernorm.weight": w[z + "mixer_norm.weight"],
                    h + "post_attention_layernorm.weight": w[z + "mlp_norm.weight"],
                    h + "self_attn.q_proj.weight": to_halves(w[z + "mixer.wq.weight"], hd),
                    h + "self_attn.k_proj.weight": to_halves(k, hd),
                    h + "self_attn.v_proj.weight": v,
                    h + "self_attn.o_proj.weight": w[z + "mixer.wo.weight"],
                }
            )
            out.update(interop.mlp_to_hf(w, z, h + "mlp."))
        return config, out

    def from_hf(self, c: Any, w: Weights) -> tuple[dict[str, Any], Weights]:
        rope = dict(getattr(c, "rope_parameters", None) or {})
        if rope.get("rope_type", "default") != "default" or rope.get("partial_rotary_factor", 1.0) != 1.0:
            raise UserError(
                f"Llama rope_parameters {rope} (scaled or partial RoPE) have no zoo counterpart; "
                f"rope_type default with the whole head rotated maps"
            )
        if getattr(c, "attention_bias", False):
            raise UserError("Llama attention_bias=true has no zoo counterpart (zoo attention has no biases)")
        act = {v: k for k, v in ACTS.items()}.get(c.hidden_act)
        if act is None:
            raise UserError(f"Llama hidden_act={c.hidden_act} has no zoo counterpart; silu or gelu_pytorch_tanh maps")
        hd = c.head_dim or c.hidden_size // c.num_attention_heads
        kv = c.num_key_value_heads or c.num_attention_heads
        model = interop.zoo_model(
            c,
            float(c.rms_norm_eps),
            mixer={
                "name": "attention",
                "n_heads": c.num_attention_heads,
                "head_dim": hd,
                "n_kv_heads": kv,
                "rope_theta": float(rope.get("rope_theta", 10000.0)),
            },
            block={
                "mlp": True,
                "mlp_hidden": c.intermediate_size,
                "mlp_act": act,
                "mlp_bias": bool(getattr(c, "mlp_bias", False)),
            },
        )
        out = interop.ends_from_hf(c, w, "model.embed_tokens.weight", "model.norm.weight")
        for i in range(c.num_hidden_layers):
            z, h = f"layers.{i}.", f"model.layers.{i}."
            out.update(
                {
                    z + "mixer_norm.weight": w[h + "input_layernorm.weight"],
                    z + "mlp_norm.weight": w[h + "post_attention_layernorm.weight"],
                    z + "mixer.wq.weight": to_pairs(w[h + "self_attn.q_proj.weight"], hd),
                    z + "mixer.wkv.weight": torch.cat(
                        [to_pairs(w[h + "self_attn.k_proj.weight"], hd), w[h + "self_attn.v_proj.weight"]]
                    ),
                    z + "mixer.wo.weight": w[h + "self_attn.o_proj.weight"],
                }
            )
            out.update(interop.mlp_from_hf(w, z, h + "mlp."))
        return model, out
