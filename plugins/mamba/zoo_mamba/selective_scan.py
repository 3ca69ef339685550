"""Mamba-1's selective scan on any device: zoo-kernels' linear scan over the
diagonal state, flattened to (batch, time, D*N) channels.

zoo_kernels.linear_scan dispatches to its chunked PyTorch scan on CPU and its
Triton scan on CUDA, with a closed-form backward; see README "Why linear_scan"
for the CPU measurement that chose it over a quadratic per-chunk form.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from zoo_kernels import linear_scan
from zoo_mamba.common import acc_dtype


def selective_scan_chunked(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Same contract as `reference.selective_scan_ref`: returns (y (b, T, D), h_T (b, D, N))."""
    b, T, D = u.shape
    N = A.shape[1]
    acc = acc_dtype(u)
    dt = dt.to(acc)[..., None]                                               # (b, T, D, 1)
    decay = torch.exp(dt * A.to(acc))                                        # (b, T, D, N)
    # dt * u first, on (b, T, D): one full-size product (and its backward) instead of two
    inp = (dt * u.to(acc)[..., None]) * B.to(acc)[:, :, None, :]             # (b, T, D, N)
    init = None if h0 is None else h0.to(acc).reshape(b, D * N)
    h, h_last = linear_scan(decay.reshape(b, T, D * N), inp.reshape(b, T, D * N), init)
    y = torch.einsum("btdn,btn->btd", h.view(b, T, D, N), C.to(acc))
    return y.to(u.dtype), h_last.view(b, D, N).to(acc)
