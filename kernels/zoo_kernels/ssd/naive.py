"""Mamba-2's SSM, one step per token: the specification of the chunked paths.

Dao & Gu 2024 (arXiv 2405.21060), section 7: a scalar decay per head,

    h_t = exp(dt_t * A_h) * h_{t-1} + dt_t * x_t B_t^T     h: (P, N) per head
    y_t = h_t C_t

x (batch, T, H, P); dt (batch, T, H); A (H,) negative; B, C (batch, T, G, N) with
H a multiple of G (the heads of a group share its B and C, like grouped-query
attention); h0 (batch, H, P, N) or None;
resets (batch, T) bool or None, True where a document starts (that step's decay is 0).
Returns y (batch, T, H, P) in x's dtype and h_T (batch, H, P, N) in float32 (float64 for
float64 x). D * x is the mixer's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._tensors import acc_dtype


def ssd_naive(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None, resets: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """resets (b, T) bool or None: a document starts at t, so step t's decay is 0."""
    b, T, H, P = x.shape
    rep = H // B.shape[2]
    acc = acc_dtype(x)
    keep = None if resets is None else ~resets.to(torch.bool)
    h = x.new_zeros(b, H, P, B.shape[3], dtype=acc) if h0 is None else h0.to(acc)
    ys = []
    for t in range(T):
        dt_t = dt[:, t].to(acc)  # (b, H)
        B_t = B[:, t].repeat_interleave(rep, 1).to(acc)  # (b, H, N)
        C_t = C[:, t].repeat_interleave(rep, 1).to(acc)
        decay = torch.exp(dt_t * A.to(acc))[:, :, None, None]
        if keep is not None:
            decay = decay * keep[:, t, None, None, None]
        h = decay * h + (dt_t[:, :, None] * x[:, t].to(acc))[..., None] * B_t[:, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C_t))
    return torch.stack(ys, 1).to(x.dtype), h
