"""hawk (and griffin: hawk + local attention) <-> transformers RecurrentGemmaForCausalLM.

The block is the same computation; four differences are folded in:
* RecurrentGemma multiplies the embeddings by sqrt(hidden_size) (held in bfloat16) and
  zoo does not: the whole residual stream is s = bf16(sqrt(dim)) times zoo's. Every
  projection that writes the residual (the recurrent block's and attention's output,
  the MLP's down projection, weights and biases) is scaled by s, and the norm epsilon
  by s^2 (RMSNorm(s x, s^2 eps) = RMSNorm(x, eps)); the embedding, shared with the
  head when tied, stays as it is.
* Its RMSNorm multiplies by (1 + weight): exported norm weights are zoo's minus 1.
* Its RG-LRU keeps softplus(recurrent_param) where zoo keeps softplus(-Lambda):
  recurrent_param = -Lambda.
* Its r and i gates are block-diagonal in num_attention_heads blocks: hawk's
  gate_heads option; and it resets the state at position 0 (multiplier 1):
  hawk's reset_at_start option. The MLP is GeGLU (block.mlp_act=gelu_tanh) with
  biases, and the logits are always soft-capped (loss.logit_softcap > 0).
"""

from __future__ import annotations

from typing import Any

import torch

from zoo_attention.hf import unmapped_position
from zoo_core import interop
from zoo_core.errors import UserError
from zoo_core.interop import HFMapping, Weights


def residual_scale(dim: int) -> float:
    """RecurrentGemma's embedding multiplier, as it computes it (a bfloat16 buffer)."""
    return torch.tensor(dim**0.5, dtype=torch.bfloat16).item()


def _halves(w, hd: int, rotated: int, inverse: bool = False):
    from zoo_attention.hf import to_halves, to_pairs

    return (to_pairs if inverse else to_halves)(w, hd, rotated)


def _fused_to_hf(w: Weights, zoo: str, first: str, second: str) -> Weights:
    """zoo's fused linear `zoo` (rows [first; second]) as RecurrentGemma's two linears, whose
    biases are zero where zoo has none."""
    weight = w[zoo + ".weight"]
    (w1, w2), (b1, b2) = weight.chunk(2), w.get(zoo + ".bias", weight.new_zeros(weight.shape[0])).chunk(2)
    return {first + ".weight": w1, first + ".bias": b1, second + ".weight": w2, second + ".bias": b2}


def _residual_to_hf(w: Weights, zoo: str, hf: str, s: float) -> Weights:
    """A projection that writes the residual stream, scaled by s (a zero bias where zoo has none)."""
    weight = w[zoo + ".weight"]
    return {hf + ".weight": s * weight, hf + ".bias": s * w.get(zoo + ".bias", weight.new_zeros(weight.shape[0]))}


class RecurrentGemmaMapping(HFMapping):
    mixers = ("hawk", "attention")
    model_types = ("recurrent_gemma",)
    architecture = "RecurrentGemmaForCausalLM"

    def refuse(self, m: Any) -> str | None:
        opts = interop.mixer_options(m)
        hawks = [o for o in opts if o["name"] == "hawk"]
        attns = [o for o in opts if o["name"] == "attention"]
        if not hawks:
            return "needs at least one hawk layer (attention-only models map to LlamaForCausalLM)"
        why = interop.refuse_shared(m, "RecurrentGemma")
        if why:
            return why
        block, loss = interop.section(m, "block"), interop.section(m, "loss")
        h = hawks[0]
        if h["gate_heads"] is None:
            return (
                "model.mixer.gate_heads is unset (dense gates); RecurrentGemma's gates are block-diagonal: "
                "train with model.mixer.gate_heads=N (N = its num_attention_heads)"
            )
        if not h["reset_at_start"]:
            return (
                "model.mixer.reset_at_start=false; RecurrentGemma resets the state at position 0: "
                "train with model.mixer.reset_at_start=true"
            )
        if h["c"] != 8.0:
            return f"model.mixer.c={h['c']}; RecurrentGemma fixes c=8"
        if block.get("mlp") is False:
            return "model.block.mlp=false; every RecurrentGemma layer has an MLP: model.block.mlp=true maps"
        if block.get("mlp_act") != "gelu_tanh":
            return (
                f"model.block.mlp_act={block.get('mlp_act')}; RecurrentGemma's one hidden_activation "
                f"(gelu_pytorch_tanh) serves the gate and the MLP: model.block.mlp_act=gelu_tanh maps"
            )
        if not loss.get("logit_softcap"):
            return (
                "model.loss.logit_softcap=0; RecurrentGemma always soft-caps logits: "
                "a positive cap (its default 30) maps"
            )
        hidden = round(h["expand"] * m.dim)
        if hidden % h["gate_heads"]:
            return f"model.mixer.gate_heads={h['gate_heads']} does not divide the RNN width {hidden}"
        if attns:
            a = attns[0]
            if unmapped_position(a):
                return unmapped_position(a)
            heads = a.get("n_heads") or max(1, m.dim // a["head_dim"])
            if heads != h["gate_heads"] or a["head_dim"] * heads != m.dim:
                return (
                    f"attention n_heads={heads}, head_dim={a['head_dim']}: RecurrentGemma uses num_attention_heads "
                    f"= hawk gate_heads ({h['gate_heads']}) and head_dim = dim / heads ({m.dim // h['gate_heads']})"
                )
            if not a.get("window"):
                return (
                    "attention window unset; RecurrentGemma's attention is local: "
                    "set its window (attention_window_size)"
                )
        return None

    def to_hf(self, m: Any, w: Weights) -> tuple[dict[str, Any], Weights]:
        opts = interop.mixer_options(m)
        h = next(o for o in opts if o["name"] == "hawk")
        attn = next((o for o in opts if o["name"] == "attention"), None)
        loss = interop.section(m, "loss")
        s = residual_scale(m.dim)
        H, n = round(h["expand"] * m.dim), h["gate_heads"]
        hidden = w["layers.0.mlp.w_out.weight"].shape[1]
        config = dict(
            **interop.hf_sizes(m),
            intermediate_size=2 * hidden,
            num_attention_heads=n,
            lru_width=H,
            conv1d_width=h["conv"],
            logits_soft_cap=float(loss["logit_softcap"]),
            rms_norm_eps=float(m.norm_eps) * s * s,
            hidden_activation="gelu_pytorch_tanh",
            block_types=["recurrent" if o["name"] == "hawk" else "attention" for o in opts],
            attention_bias=False,
            partial_rotary_factor=float((attn or {}).get("rope_fraction", 1.0)),
            rope_parameters={
                "rope_type": "default",
                "rope_theta": float((attn or {}).get("rope_theta", 1e4)),
                "partial_rotary_factor": float((attn or {}).get("rope_fraction", 1.0)),
            },
        )
        if attn is not None:
            config.update(num_key_value_heads=attn.get("n_kv_heads") or n, attention_window_size=attn["window"])
        out = interop.ends_to_hf(m, w, "model.embed_tokens.weight", "model.final_norm.weight", norm_offset=1)
        for i, o in enumerate(opts):
            z, p = f"layers.{i}.", f"model.layers.{i}."
            out[p + "temporal_pre_norm.weight"] = w[z + "mixer_norm.weight"] - 1
            out[p + "channel_pre_norm.weight"] = w[z + "mlp_norm.weight"] - 1
            mb = p + "mlp_block."
            out.update(_fused_to_hf(w, z + "mlp.w_in", mb + "gate_proj", mb + "up_proj"))
            out.update(_residual_to_hf(w, z + "mlp.w_out", mb + "down_proj", s))
            if o["name"] == "hawk":
                t, zm = p + "temporal_block.", z + "mixer."
                out.update(_fused_to_hf(w, zm + "in_proj", t + "linear_y", t + "linear_x"))
                out.update(_residual_to_hf(w, zm + "out_proj", t + "linear_out", s))
                gw, gb = w[zm + "gate_weight"], w[zm + "gate_bias"].view(2, n, H // n)
                out.update(
                    {
                        t + "conv_1d.weight": w[zm + "conv.weight"][:, None],
                        t + "conv_1d.bias": w[zm + "conv.bias"],
                        t + "rg_lru.recurrent_param": -w[zm + "a_param"],
                        t + "rg_lru.recurrent_gate_weight": gw[0],
                        t + "rg_lru.recurrent_gate_bias": gb[0],
                        t + "rg_lru.input_gate_weight": gw[1],
                        t + "rg_lru.input_gate_bias": gb[1],
                    }
                )
            else:
                t, zm, hd = p + "temporal_block.", z + "mixer.", attn["head_dim"]
                kv, rot = config["num_key_value_heads"], int(hd * attn["rope_fraction"])
                k, v = w[zm + "wkv.weight"].split(kv * hd)
                out.update(
                    {
                        t + "q_proj.weight": _halves(w[zm + "wq.weight"], hd, rot),
                        t + "k_proj.weight": _halves(k, hd, rot),
                        t + "v_proj.weight": v,
                        **_residual_to_hf(w, zm + "wo", t + "o_proj", s),
                    }
                )
        return config, out

    def from_hf(self, c: Any, w: Weights) -> tuple[dict[str, Any], Weights]:
        if c.hidden_activation != "gelu_pytorch_tanh":
            raise UserError(
                f"RecurrentGemma hidden_activation={c.hidden_activation} has no zoo counterpart "
                f"(hawk's gate is tanh GeLU); gelu_pytorch_tanh maps"
            )
        rope = dict(getattr(c, "rope_parameters", None) or {})
        kinds: list[str] = list(c.layers_block_type)
        has_attn = "sliding_attention" in kinds
        fraction = float(rope.get("partial_rotary_factor", getattr(c, "partial_rotary_factor", 1.0)))
        if has_attn and getattr(c, "attention_bias", False):
            raise UserError("RecurrentGemma attention_bias=true has no zoo counterpart (zoo attention has no biases)")
        s = residual_scale(c.hidden_size)
        H, n, dim = c.lru_width, c.num_attention_heads, c.hidden_size
        eps = float(c.rms_norm_eps) / (s * s)
        hawk = {
            "name": "hawk",
            "expand": H / dim,
            "conv": c.conv1d_width,
            "c": 8.0,
            "gate_heads": n,
            "bias": True,
            "reset_at_start": True,
        }
        attn = {
            "name": "attention",
            "n_heads": n,
            "head_dim": c.head_dim,
            "n_kv_heads": c.num_key_value_heads,
            "window": c.attention_window_size,
            "rope_theta": float(rope.get("rope_theta", 10000.0)),
            "rope_fraction": fraction,
            "out_bias": True,
        }
        model = interop.zoo_model(
            c,
            eps,
            hawk,
            block={"mlp": True, "mlp_hidden": c.intermediate_size // 2, "mlp_act": "gelu_tanh", "mlp_bias": True},
            loss={"logit_softcap": float(c.logits_soft_cap)},
        )
        if has_attn:
            model["pattern"] = ["hawk" if k == "linear_attention" else attn for k in kinds]
        out = interop.ends_from_hf(c, w, "model.embed_tokens.weight", "model.final_norm.weight", norm_offset=1)
        for i, kind in enumerate(kinds):
            z, p = f"layers.{i}.", f"model.layers.{i}."
            out[z + "mixer_norm.weight"] = w[p + "temporal_pre_norm.weight"] + 1
            out[z + "mlp_norm.weight"] = w[p + "channel_pre_norm.weight"] + 1
            mlp = interop.mlp_from_hf(w, z, p + "mlp_block.")  # its down_proj writes the residual: / s
            out.update({k: v / s if ".w_out." in k else v for k, v in mlp.items()})
            t, zm = p + "temporal_block.", z + "mixer."
            if kind == "linear_attention":
                r = t + "rg_lru."
                out.update(
                    {
                        zm + "in_proj.weight": torch.cat([w[t + "linear_y.weight"], w[t + "linear_x.weight"]]),
                        zm + "in_proj.bias": torch.cat([w[t + "linear_y.bias"], w[t + "linear_x.bias"]]),
                        zm + "out_proj.weight": w[t + "linear_out.weight"] / s,
                        zm + "out_proj.bias": w[t + "linear_out.bias"] / s,
                        zm + "conv.weight": w[t + "conv_1d.weight"][:, 0],
                        zm + "conv.bias": w[t + "conv_1d.bias"],
                        zm + "a_param": -w[r + "recurrent_param"],
                        zm + "gate_weight": torch.stack([w[r + "recurrent_gate_weight"], w[r + "input_gate_weight"]]),
                        zm + "gate_bias": torch.cat(
                            [w[r + "recurrent_gate_bias"].flatten(), w[r + "input_gate_bias"].flatten()]
                        ),
                    }
                )
            else:
                hd = c.head_dim
                rot = int(hd * fraction)
                out.update(
                    {
                        zm + "wq.weight": _halves(w[t + "q_proj.weight"], hd, rot, inverse=True),
                        zm + "wkv.weight": torch.cat(
                            [_halves(w[t + "k_proj.weight"], hd, rot, inverse=True), w[t + "v_proj.weight"]]
                        ),
                        zm + "wo.weight": w[t + "o_proj.weight"] / s,
                        zm + "wo.bias": w[t + "o_proj.bias"] / s,
                    }
                )
        return model, out
