"""DeltaNet and Gated DeltaNet as the papers write them, one token at a time.

The definitions the chunked form, the Triton kernel and `step` are tested against.
With S_t in R^{d_v x d_k} per head (the papers' layout):

    S_t = a_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,     o_t = S_t q_t

(DeltaNet: a_t = 1). At a document start t (`resets[:, t]`) the state before t is zero,
S_{t-1} := 0, so packed documents give what each gives run alone from the zero state.
The mixers keep the state transposed, H = S^T of shape (d_k, d_v),
as flash-linear-attention and transformers do; these functions take and return that layout.
`naive_mixer` recomputes a whole mixer from its weights with none of its code paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def naive_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    alpha: Tensor | None = None,
    h0: Tensor | None = None,
    scale: float | None = None,
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """q, k (B, T, H, Dk), v (B, T, H, Dv), beta and alpha (the decay a_t) (B, T, H),
    h0 (B, H, Dk, Dv), resets (B, T) bool, True where a document starts. Returns o (B, T, H, Dv)
    and the final state (B, H, Dk, Dv), in float32 or wider (float64 in, float64 out)."""
    acc = torch.promote_types(q.dtype, torch.float32)
    q, k, v, beta = (t.to(acc) for t in (q, k, v, beta))
    B, T, Hh, Dk = q.shape
    Dv = v.shape[-1]
    q = q * (Dk**-0.5 if scale is None else scale)
    eye = torch.eye(Dk, dtype=acc, device=q.device)
    S = q.new_zeros(B, Hh, Dv, Dk) if h0 is None else h0.to(acc).transpose(-1, -2)
    outs = []
    for t in range(T):
        kt, vt, bt = k[:, t], v[:, t], beta[:, t, :, None, None]
        a = 1.0 if alpha is None else alpha[:, t].to(acc)[:, :, None, None]
        if resets is not None:
            S = torch.where(resets[:, t, None, None, None], 0.0, S)
        S = a * S @ (eye - bt * kt[..., :, None] * kt[..., None, :]) + bt * vt[..., :, None] * kt[..., None, :]
        outs.append((S @ q[:, t, :, :, None])[..., 0])
    return torch.stack(outs, 1), S.transpose(-1, -2)


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(sum x^2 + eps) over the head dim (flash-linear-attention's definition)."""
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + eps)


def naive_conv_silu(x: Tensor, weight: Tensor, prev: Tensor, resets: Tensor | None = None) -> Tensor:
    """y_t[c] = SiLU(sum_j weight[c, j] x_{t-W+1+j}[c]), the inputs before t = 0 from prev; with
    resets, the taps that reach before the document of t are zero."""
    B, T, _ = x.shape
    W = weight.shape[1]
    xs = torch.cat([prev.to(x.dtype), x], 1)
    # doc[s]: the index of the document of padded position s (prev rows are document 0)
    doc = torch.zeros(B, W - 1 + T, dtype=torch.long, device=x.device)
    if resets is not None:
        doc[:, W - 1 :] = resets.long().cumsum(1)
    ys = []
    for t in range(T):
        same = (doc[:, t : t + W] == doc[:, t + W - 1, None]).to(x.dtype)[..., None]
        ys.append((xs[:, t : t + W] * same * weight.t()).sum(1))
    y = torch.stack(ys, 1)
    return y * torch.sigmoid(y)


def naive_mixer(m, x: Tensor, state: dict[str, Tensor] | None = None, resets: Tensor | None = None) -> Tensor:
    """The whole DeltaNet / GatedDeltaNet mixer `m`, from its weights; `resets` (B, T) bool
    marks document starts."""
    B, T, _ = x.shape
    state = state if state is not None else m.init_state(B, x.device, x.dtype)
    Hh, Dk, Dv = m.n_heads, m.head_k_dim, m.head_v_dim
    qkv = naive_conv_silu(x @ m.qkv_proj.weight.t(), m.conv_weight, state["conv"], resets)
    q, k, v = qkv.split([Hh * Dk, Hh * Dk, Hh * Dv], -1)
    q, k = l2norm(q.unflatten(-1, (Hh, Dk))), l2norm(k.unflatten(-1, (Hh, Dk)))
    v = v.unflatten(-1, (Hh, Dv))
    beta = torch.sigmoid(x @ m.b_proj.weight.t())
    alpha = None
    if hasattr(m, "A_log"):  # Gated DeltaNet: alpha_t = exp(-exp(A_log) softplus(W_a x + dt_bias))
        alpha = torch.exp(-torch.exp(m.A_log) * F.softplus(x @ m.a_proj.weight.t() + m.dt_bias))
    o, _ = naive_delta_rule(q, k, v, beta, alpha, state["ssm"], resets=resets)
    o = o.to(x.dtype)
    # output gated RMSNorm per head: RMSNorm(o) * w * SiLU(W_g x)
    o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + m.config.norm_eps) * m.norm_weight
    z = (x @ m.g_proj.weight.t()).unflatten(-1, (Hh, Dv))
    return (o * z * torch.sigmoid(z)).flatten(-2) @ m.out_proj.weight.t()
