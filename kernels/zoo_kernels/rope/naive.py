"""The rotation of RoPE as the equation writes it: pairs (x[2i], x[2i+1]) of the first R dims
rotated by the angle whose cos and sin are given, the rest passed; computed in at least float32."""

from __future__ import annotations

import torch
from torch import Tensor


def rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, T, H, D); cos, sin (B, T, R/2) -> (B, T, H, D) in x's dtype."""
    R = 2 * cos.shape[-1]
    work = torch.promote_types(x.dtype, torch.float32)
    c, s = cos.to(work)[:, :, None], sin.to(work)[:, :, None]
    x1, x2 = x[..., :R:2].to(work), x[..., 1:R:2].to(work)
    rotated = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2).to(x.dtype)
    return torch.cat([rotated, x[..., R:]], dim=-1) if R < x.shape[-1] else rotated
