"""RMSNorm as the equation writes it, through autograd: y = x / sqrt(mean(x^2) + eps) * w,
computed in float32 at least and returned in `out_dtype` (default x's)."""

from __future__ import annotations

import torch
from torch import Tensor


def rms_norm(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype | None = None) -> Tensor:
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.to(xf.dtype)
    return y.to(out_dtype or x.dtype)
