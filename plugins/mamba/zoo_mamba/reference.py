"""Naive references: one Python step per token, written as the papers' equations.

They are the specification every other path (chunked PyTorch, CUDA kernels,
recurrent `step`) is tested against. States accumulate in float32 (float64 for
float64 inputs), like the fast paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo_kernels.selective import selective_scan_naive
from zoo_kernels.ssd import ssd_naive


def causal_conv_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None, conv_state: Tensor | None, resets: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """y_t = SiLU(bias + sum_k weight[:, k] * x_{t - (W-1) + k}), inputs before the segment from conv_state.

    resets (B, T) bool: a document starts at t, so no tap of t or later reaches an input before t;
    the returned state (the last W-1 inputs) then has the rows before the last start zeroed."""
    B, T, C = x.shape
    W = weight.shape[1]
    past = x.new_zeros(B, W - 1, C) if conv_state is None else conv_state.to(x.dtype)
    xs = torch.cat([past, x], 1)
    # starts[:, j]: the document starts at or before padded position j (the past holds none)
    starts = None if resets is None else F.pad(torch.cumsum(resets.long(), 1), (W - 1, 0))
    ys = []
    for t in range(T):
        taps = []
        for k in range(W):
            tap = weight[:, k] * xs[:, t + k]
            if starts is not None:  # the tap's input is in t's document: no start after it, up to t
                tap = tap * (starts[:, t + W - 1] == starts[:, t + k])[:, None]
            taps.append(tap)
        y = sum(taps)
        ys.append(y if bias is None else y + bias)
    state = xs[:, T:]
    if starts is not None:
        state = state * (starts[:, T:] == starts[:, -1:])[..., None]
    return F.silu(torch.stack(ys, 1)), state


# Mamba-1 (Gu & Dao 2023, eq. 2a-2b with zero-order-hold A and Euler B):
#
#     h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t      h: (D, N) per sequence
#     y_t = C_t . h_t
#
# u, dt (batch, T, D); A (D, N) negative; B, C (batch, T, N); h0 (batch, D, N).
# Returns y (batch, T, D) and the last state h_T (batch, D, N). The D*u skip term
# is added by the mixer. The loop lives in zoo-kernels beside the fused kernel it specifies.
selective_scan_ref = selective_scan_naive


# Mamba-2 (Dao & Gu 2024, section 7), a scalar decay per head:
#
#     h_t = exp(dt_t * A_h) * h_{t-1} + dt_t * x_t B_t^T     h: (P, N) per head
#     y_t = h_t C_t
#
# x (batch, T, H, P); dt (batch, T, H); A (H,) negative; B, C (batch, T, G, N) with H a
# multiple of G (heads share their group's B and C); h0 (batch, H, P, N). Returns y
# (batch, T, H, P) and h_T (batch, H, P, N); D*x is added by the mixer. The loop lives in
# zoo-kernels (zoo_kernels/ssd/naive.py) beside the chunked and Triton paths it specifies.
ssd_ref = ssd_naive
