"""GatedDeltaNet weights in the layout of transformers' Qwen3-Next linear-attention layer
(`Qwen3NextGatedDeltaNet`, transformers >= 4.57), which computes the same function: the
same conv + SiLU on q, k, v, L2 norms (eps 1e-6), q scale d_k^-1/2, beta = sigmoid(b),
g = -exp(A_log) softplus(a + dt_bias), and RMSNorm(o) * w * SiLU(z) per head.

Qwen3-Next interleaves its fused projections per key head: in_proj_qkvz rows are
[q_h, k_h, v_h, z_h] for each head h, in_proj_ba rows [b_h, a_h]. With as many value heads
as key heads (what GatedDeltaNet has) that is a permutation of our rows. This maps one
layer's weights; a whole-model export belongs to the core's export hook (not written here).
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor


def qwen3_next_config_kwargs(m) -> Dict[str, int]:
    """The Qwen3NextConfig fields one GatedDeltaNet layer fixes."""
    return {"hidden_size": m.dim, "linear_num_key_heads": m.n_heads, "linear_num_value_heads": m.n_heads,
            "linear_key_head_dim": m.head_k_dim, "linear_value_head_dim": m.head_v_dim,
            "linear_conv_kernel_dim": m.config.conv}


def to_qwen3_next(m) -> Dict[str, Tensor]:
    """A GatedDeltaNet's state dict as Qwen3NextGatedDeltaNet's."""
    H, Dk, Dv = m.n_heads, m.head_k_dim, m.head_v_dim
    q, k, v = m.qkv_proj.weight.detach().split([H * Dk, H * Dk, H * Dv])
    z = m.g_proj.weight.detach()
    heads = lambda w, d: w.reshape(H, d, -1)  # noqa: E731
    qkvz = torch.cat([heads(q, Dk), heads(k, Dk), heads(v, Dv), heads(z, Dv)], 1).reshape(-1, m.dim)
    ba = torch.stack([m.b_proj.weight.detach(), m.a_proj.weight.detach()], 1).reshape(-1, m.dim)
    return {"in_proj_qkvz.weight": qkvz, "in_proj_ba.weight": ba,
            "conv1d.weight": m.conv_weight.detach()[:, None, :],  # (C, 1, W); w[..., -1] on x_t
            "dt_bias": m.dt_bias.detach(), "A_log": m.A_log.detach(),
            "norm.weight": m.norm_weight.detach(), "out_proj.weight": m.out_proj.weight.detach()}
