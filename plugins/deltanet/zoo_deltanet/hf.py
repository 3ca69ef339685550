"""GatedDeltaNet <-> transformers' Qwen3-Next (`Qwen3NextForCausalLM`, transformers >= 4.57).

One layer: `Qwen3NextGatedDeltaNet` computes the same function as our GatedDeltaNet: the
same conv + SiLU on q, k, v, L2 norms (eps 1e-6), q scale d_k^-1/2, beta = sigmoid(b),
g = -exp(A_log) softplus(a + dt_bias), and RMSNorm(o) * w * SiLU(z) per head.
Qwen3-Next interleaves its fused projections per key head: in_proj_qkvz rows are
[q_h, k_h, v_h, z_h] for each head h, in_proj_ba rows [b_h, a_h]. With as many value heads
as key heads (what GatedDeltaNet has) that is a permutation of our rows.

The whole model (`Qwen3NextMapping`, `zoo export --format hf` / `zoo import`): a zoo model
whose every layer is gated_deltanet in the prenorm block with its SwiGLU MLP is a Qwen3-Next
config with `layer_types` all `linear_attention` and every layer in `mlp_only_layers` (a dense
MLP, gate_proj / up_proj / down_proj). Two more differences are folded in:
* Qwen3-Next's block RMSNorms multiply by (1 + weight): exported norm weights are zoo's
  minus 1 (the gated RMSNorm inside the layer multiplies by its weight, as zoo's does);
* one `hidden_act` serves the short conv's activation and the MLP, and one `rms_norm_eps`
  every norm, the gated one included: the MLP must be SwiGLU and the epsilons equal.
Not mapped: DeltaNet (no decay), attention layers (Qwen3-Next's are output-gated with partial
RoPE, so gdn-hybrid is not exported), mixture-of-experts layers and more value heads than key
heads on import.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from zoo_core import interop
from zoo_core.errors import UserError
from zoo_core.interop import HFMapping, Weights


def qwen3_next_config_kwargs(m) -> dict[str, int]:
    """The Qwen3NextConfig fields one GatedDeltaNet layer fixes."""
    return {
        "hidden_size": m.dim,
        "linear_num_key_heads": m.n_heads,
        "linear_num_value_heads": m.n_heads,
        "linear_key_head_dim": m.head_k_dim,
        "linear_value_head_dim": m.head_v_dim,
        "linear_conv_kernel_dim": m.config.conv,
    }


def _layer_to_hf(qkv: Tensor, z: Tensor, b: Tensor, a: Tensor, H: int, Dk: int, Dv: int) -> tuple[Tensor, Tensor]:
    """Our qkv_proj, g_proj, b_proj, a_proj rows as Qwen3-Next's in_proj_qkvz, in_proj_ba."""
    dim = qkv.shape[-1]
    q, k, v = qkv.split([H * Dk, H * Dk, H * Dv])
    heads = lambda w, d: w.reshape(H, d, dim)  # noqa: E731
    qkvz = torch.cat([heads(q, Dk), heads(k, Dk), heads(v, Dv), heads(z, Dv)], 1).reshape(-1, dim)
    return qkvz, torch.stack([b, a], 1).reshape(-1, dim)


def _layer_from_hf(qkvz: Tensor, ba: Tensor, H: int, Dk: int, Dv: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The inverse of `_layer_to_hf`: (qkv_proj, g_proj, b_proj, a_proj) weights."""
    dim = qkvz.shape[-1]
    q, k, v, z = qkvz.reshape(H, 2 * Dk + 2 * Dv, dim).split([Dk, Dk, Dv, Dv], 1)
    flat = lambda w: w.reshape(-1, dim)  # noqa: E731
    b, a = ba.reshape(H, 2, dim).unbind(1)
    return torch.cat([flat(q), flat(k), flat(v)]), flat(z), b, a


def to_qwen3_next(m) -> dict[str, Tensor]:
    """A GatedDeltaNet's state dict as Qwen3NextGatedDeltaNet's."""
    qkvz, ba = _layer_to_hf(
        m.qkv_proj.weight.detach(),
        m.g_proj.weight.detach(),
        m.b_proj.weight.detach(),
        m.a_proj.weight.detach(),
        m.n_heads,
        m.head_k_dim,
        m.head_v_dim,
    )
    return {
        "in_proj_qkvz.weight": qkvz,
        "in_proj_ba.weight": ba,
        "conv1d.weight": m.conv_weight.detach()[:, None, :],  # (C, 1, W); w[..., -1] on x_t
        "dt_bias": m.dt_bias.detach(),
        "A_log": m.A_log.detach(),
        "norm.weight": m.norm_weight.detach(),
        "out_proj.weight": m.out_proj.weight.detach(),
    }


def _head_dims(dim: int, o: dict[str, Any]) -> tuple[int, int, int]:
    """(H, d_k, d_v) as GatedDeltaNet derives them from its options."""
    H = o["n_heads"]
    dk = o["head_k_dim"] or max(1, round(0.75 * dim / H))
    return H, dk, int(round(o["expand_v"] * dk))


class Qwen3NextMapping(HFMapping):
    mixers = ("gated_deltanet",)
    model_types = ("qwen3_next",)
    architecture = "Qwen3NextForCausalLM"

    def refuse(self, m: Any) -> str | None:
        why = interop.refuse_shared(m, "Qwen3-Next")  # the gated norm's norm_eps included
        if why:
            return why
        block, loss = interop.section(m, "block"), interop.section(m, "loss")
        if block.get("mlp") is False:
            return (
                "model.block.mlp=false; every Qwen3-Next layer has an MLP (dense in mlp_only_layers): "
                "model.block.mlp=true (or unset) maps"
            )
        if block.get("mlp_act") != "silu":
            return (
                f"model.block.mlp_act={block.get('mlp_act')}; Qwen3-Next's one hidden_act serves the short conv "
                f"(SiLU in gated_deltanet) and the MLP: model.block.mlp_act=silu maps"
            )
        if block.get("mlp_bias"):
            return "model.block.mlp_bias=true has no Qwen3-Next counterpart (its MLPs have no biases); false maps"
        if loss.get("logit_softcap"):
            return f"model.loss.logit_softcap={loss['logit_softcap']} has no Qwen3-Next counterpart; 0 (off) maps"
        return None

    def to_hf(self, m: Any, w: Weights) -> tuple[dict[str, Any], Weights]:
        o = interop.mixer_options(m)[0]
        H, Dk, Dv = _head_dims(m.dim, o)
        n = m.n_layers
        config = dict(
            **interop.hf_sizes(m),
            intermediate_size=w["layers.0.mlp.w_out.weight"].shape[1],
            layer_types=["linear_attention"] * n,
            mlp_only_layers=list(range(n)),
            hidden_act="silu",
            rms_norm_eps=float(m.norm_eps),
            linear_num_key_heads=H,
            linear_num_value_heads=H,
            linear_key_head_dim=Dk,
            linear_value_head_dim=Dv,
            linear_conv_kernel_dim=int(o["conv"]),
        )
        out = interop.ends_to_hf(m, w, "model.embed_tokens.weight", "model.norm.weight", norm_offset=1)
        for i in range(n):
            z, h = f"layers.{i}.", f"model.layers.{i}."
            x = z + "mixer."
            qkvz, ba = _layer_to_hf(
                w[x + "qkv_proj.weight"],
                w[x + "g_proj.weight"],
                w[x + "b_proj.weight"],
                w[x + "a_proj.weight"],
                H,
                Dk,
                Dv,
            )
            out.update(
                {
                    h + "input_layernorm.weight": w[z + "mixer_norm.weight"] - 1,
                    h + "post_attention_layernorm.weight": w[z + "mlp_norm.weight"] - 1,
                    h + "linear_attn.in_proj_qkvz.weight": qkvz,
                    h + "linear_attn.in_proj_ba.weight": ba,
                    h + "linear_attn.conv1d.weight": w[x + "conv_weight"][:, None, :],
                    h + "linear_attn.dt_bias": w[x + "dt_bias"],
                    h + "linear_attn.A_log": w[x + "A_log"],
                    h + "linear_attn.norm.weight": w[x + "norm_weight"],
                    h + "linear_attn.out_proj.weight": w[x + "out_proj.weight"],
                    **interop.mlp_to_hf(w, z, h + "mlp."),
                }
            )
        return config, out

    def from_hf(self, c: Any, w: Weights) -> tuple[dict[str, Any], Weights]:
        n = c.num_hidden_layers
        kinds = sorted(set(c.layer_types[:n]) - {"linear_attention"})
        if kinds:
            raise UserError(
                f"Qwen3-Next layer_types include {', '.join(kinds)}: its attention (output-gated, partial "
                f"RoPE) has no zoo counterpart; only all-linear_attention models import"
            )
        sparse = [
            i
            for i in range(n)
            if i not in (c.mlp_only_layers or []) and c.num_experts > 0 and (i + 1) % c.decoder_sparse_step == 0
        ]
        if sparse:
            raise UserError(
                f"Qwen3-Next layers {sparse[:4]}{'...' if len(sparse) > 4 else ''} are mixture-of-experts, "
                f"which zoo's prenorm block has no counterpart for; only dense MLPs (mlp_only_layers) import"
            )
        if c.linear_num_value_heads != c.linear_num_key_heads:
            raise UserError(
                f"Qwen3-Next linear_num_value_heads={c.linear_num_value_heads} differs from "
                f"linear_num_key_heads={c.linear_num_key_heads}; zoo's gated_deltanet has one value head a "
                f"key head"
            )
        if c.hidden_act != "silu":
            raise UserError(
                f"Qwen3-Next hidden_act={c.hidden_act} has no zoo counterpart (gated_deltanet's conv "
                f"uses SiLU); silu maps"
            )
        H, Dk, Dv = c.linear_num_key_heads, c.linear_key_head_dim, c.linear_value_head_dim
        eps = float(c.rms_norm_eps)
        model = interop.zoo_model(
            c,
            eps,
            mixer={
                "name": "gated_deltanet",
                "n_heads": H,
                "head_k_dim": Dk,
                "expand_v": Dv / Dk,
                "conv": c.linear_conv_kernel_dim,
                "norm_eps": eps,
            },
            block={"mlp": True, "mlp_hidden": c.intermediate_size, "mlp_act": "silu", "mlp_bias": False},
        )
        out = interop.ends_from_hf(c, w, "model.embed_tokens.weight", "model.norm.weight", norm_offset=1)
        for i in range(n):
            z, h = f"layers.{i}.", f"model.layers.{i}.linear_attn."
            qkv, g, b, a = _layer_from_hf(w[h + "in_proj_qkvz.weight"], w[h + "in_proj_ba.weight"], H, Dk, Dv)
            p = f"model.layers.{i}."
            out.update(
                {
                    z + "mixer_norm.weight": w[p + "input_layernorm.weight"] + 1,
                    z + "mlp_norm.weight": w[p + "post_attention_layernorm.weight"] + 1,
                    z + "mixer.qkv_proj.weight": qkv,
                    z + "mixer.g_proj.weight": g,
                    z + "mixer.b_proj.weight": b,
                    z + "mixer.a_proj.weight": a,
                    z + "mixer.conv_weight": w[h + "conv1d.weight"][:, 0],
                    z + "mixer.dt_bias": w[h + "dt_bias"],
                    z + "mixer.A_log": w[h + "A_log"],
                    z + "mixer.norm_weight": w[h + "norm.weight"],
                    z + "mixer.out_proj.weight": w[h + "out_proj.weight"],
                    **interop.mlp_from_hf(w, z, p + "mlp."),
                }
            )
        return model, out
