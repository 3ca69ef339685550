"""Mamba-1's selective scan, one step per token: the definition the fast paths are tested against."""

from __future__ import annotations

import torch
from torch import Tensor

from .._tensors import acc_dtype


def selective_scan_naive(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    acc = acc_dtype(u)
    h = u.new_zeros(u.shape[0], A.shape[0], A.shape[1], dtype=acc) if h0 is None else h0.to(acc)
    A = A.to(acc)
    ys = []
    for t in range(u.shape[1]):
        dt_t = dt[:, t, :, None].to(acc)  # (b, D, 1)
        h = torch.exp(dt_t * A) * h + dt_t * B[:, t, None, :].to(acc) * u[:, t, :, None].to(acc)
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t].to(acc)))
    return torch.stack(ys, 1).to(u.dtype), h
