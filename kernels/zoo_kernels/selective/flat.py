"""The selective scan as one linear scan over (batch, T, D*N) channels: the fallback path.

The decays and inputs are materialised as (batch, T, D, N) tensors and handed to
zoo_kernels.linear_scan (chunked/compiled on CPU, Triton on CUDA), so it is only used
without a C compiler on CPU and for a state the fused Triton kernel refuses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._tensors import acc_dtype
from ..scan import linear_scan


def selective_scan_flat(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None, resets: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    b, T, D = u.shape
    N = A.shape[1]
    acc = acc_dtype(u)
    dt = dt.to(acc)[..., None]  # (b, T, D, 1)
    decay = torch.exp(dt * A.to(acc))  # (b, T, D, N)
    if resets is not None:  # a document starts at t: decay 0 (linear_scan never divides by a decay)
        decay = decay * ~resets.to(torch.bool)[:, :, None, None]
    # dt * u first, on (b, T, D): one full-size product (and its backward) instead of two
    inp = (dt * u.to(acc)[..., None]) * B.to(acc)[:, :, None, :]  # (b, T, D, N)
    init = None if h0 is None else h0.to(acc).reshape(b, D * N)
    h, h_last = linear_scan(decay.reshape(b, T, D * N), inp.reshape(b, T, D * N), init)
    y = torch.einsum("btdn,btn->btd", h.view(b, T, D, N), C.to(acc))
    return y.to(u.dtype), h_last.view(b, D, N)
