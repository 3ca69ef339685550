"""Attention as the equations write it: the definition the fast path is tested against."""
import math

import torch
from torch import Tensor


def rope(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """Rotary embedding (Su et al. 2021) on (B, H, T, hd), positions (B, T).
    Pairs (x[2i], x[2i+1]) are rotated by angle pos * theta^(-2i/hd)."""
    hd = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    work = torch.promote_types(x.dtype, torch.float32)  # at least fp32, float64 stays float64
    angles = positions.to(work)[:, None, :, None] * inv_freq.to(work)  # (B, 1, T, hd/2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.to(work)[..., 0::2], x.to(work)[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.type_as(x)


def allowed(q_pos: Tensor, k_pos: Tensor, window: int | None) -> Tensor:
    """(B, Tq, Tk) mask: key j is visible from query i iff it is not in the
    future and, with a window w, fewer than w positions back."""
    diff = q_pos[:, :, None] - k_pos[:, None, :]
    ok = diff >= 0
    if window:
        ok &= diff < window
    return ok


def naive_attention(q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, window: int | None) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, with grouped kv heads repeated."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    work = torch.promote_types(q.dtype, torch.float32)
    scores = (q.to(work) @ k.to(work).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed(q_pos, k_pos, window)[:, None], float("-inf"))
    return (scores.softmax(-1) @ v.to(work)).type_as(q)
