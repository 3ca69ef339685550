"""Mamba-2's chunked state-space duality (SSD) in plain PyTorch: the CPU fast path.

The sequence is cut into chunks of L steps (Dao & Gu 2024, section 6):
  1. within a chunk, the SSM is a masked quadratic form (attention-like):
         y_l = sum_{s<=l} (C_l . B_s) exp(a_l - a_s) dt_s x_s,    a = cumsum(dt * A)
  2. each chunk's end state from a zero start: sum_s exp(a_L - a_s) dt_s x_s B_s^T;
  3. states are passed between chunks, h_c = exp(a_L) h_{c-1} + state_c (a short loop);
  4. each position adds the entering state's contribution C_l exp(a_l) h_{c-1}.
Every exponent is a sum of dt * A <= 0 over a causal span, so nothing overflows.
A tail shorter than L is padded with dt = 0 (decay 1, input 0), which leaves the
state unchanged, so any length works.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo_mamba.common import acc_dtype


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Same contract as `reference.ssd_ref`: returns (y (b, T, H, P), h_T (b, H, P, N))."""
    b, T, H, P = x.shape
    N = B.shape[3]
    rep = H // B.shape[2]
    acc, dtype = acc_dtype(x), x.dtype
    L = min(chunk_size, T)
    pad = (-T) % L
    if pad:  # zeros in x, dt, B, C: dt = 0 means decay 1 and no input
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    nc = (T + pad) // L
    x = x.to(acc).unflatten(1, (nc, L))                                      # (b, c, l, H, P)
    dt = dt.to(acc).unflatten(1, (nc, L))                                    # (b, c, l, H)
    B = B.to(acc).repeat_interleave(rep, 2).unflatten(1, (nc, L))            # (b, c, l, H, N)
    C = C.to(acc).repeat_interleave(rep, 2).unflatten(1, (nc, L))

    a = torch.cumsum(dt * A.to(acc), dim=2)                                  # (b, c, l, H), decreasing
    xdt = x * dt[..., None]

    # 1. within-chunk quadratic form with the segment-sum decay mask
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    seg = (a[:, :, :, None, :] - a[:, :, None, :, :]).masked_fill(~causal[:, :, None], -float("inf"))
    scores = torch.einsum("bclhn,bcshn->bclsh", C, B) * torch.exp(seg)      # (b, c, l, s, H)
    y = torch.einsum("bclsh,bcshp->bclhp", scores, xdt)

    # 2. each chunk's end state, from a zero start
    to_end = torch.exp(a[:, :, -1:] - a)                                     # (b, c, l, H)
    states = torch.einsum("bclhn,bclhp->bchpn", B, xdt * to_end[..., None])  # (b, c, H, P, N)

    # 3. pass states between chunks
    chunk_decay = torch.exp(a[:, :, -1])[..., None, None]                    # (b, c, H, 1, 1)
    h = x.new_zeros(b, H, P, N) if h0 is None else h0.to(acc)
    entering = []
    for c in range(nc):
        entering.append(h)
        h = chunk_decay[:, c] * h + states[:, c]
    entering = torch.stack(entering, 1)                                      # (b, c, H, P, N)

    # 4. the entering state's contribution to every position of its chunk
    y = y + torch.einsum("bclhn,bchpn->bclhp", C * torch.exp(a)[..., None], entering)
    return y.flatten(1, 2)[:, :T].to(dtype), h
