"""Mamba-1's selective scan, one step per token: the definition the fast paths are tested against."""

from __future__ import annotations

import torch
from torch import Tensor

from .._tensors import acc_dtype


def selective_scan_naive(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None, resets: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """resets (b, T) bool or None: a document starts at t, so step t's decay is 0."""
    acc = acc_dtype(u)
    keep = None if resets is None else ~resets.to(torch.bool)
    h = u.new_zeros(u.shape[0], A.shape[0], A.shape[1], dtype=acc) if h0 is None else h0.to(acc)
    A = A.to(acc)
    ys = []
    for t in range(u.shape[1]):
        dt_t = dt[:, t, :, None].to(acc)  # (b, D, 1)
        decay = torch.exp(dt_t * A)
        if keep is not None:
            decay = decay * keep[:, t, None, None]
        h = decay * h + dt_t * B[:, t, None, :].to(acc) * u[:, t, :, None].to(acc)
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t].to(acc)))
    return torch.stack(ys, 1).to(u.dtype), h
