"""What the attention mixer may do to its input before q, k and v, both options off by default.

conv=k:            x_t <- b + sum_j w_j * x_{t-k+1+j}   per channel, causal (Zoology's
                   Hybrid[BaseConv, MHA]: it hands each position its predecessors)
position=learned:  x_t <- x_t + P[pos_t]                absolute positions (Zoology's attention)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def short_conv(
    conv: nn.Conv1d, x: Tensor, prev: Tensor | None, positions: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The causal depthwise conv over x (B, T, C) after `prev`, the last k-1 inputs of the
    previous segment (None: zeros, a stream's start); returns y and the new last k-1 inputs.

    `positions` (B, T), data.documents=reset: each input's position in its document. A tap
    that reaches further back than the document's start reads zero, and so do the returned
    inputs that precede the last document (the next segment starts from them as from zeros)."""
    k = conv.kernel_size[0]
    prev = x.new_zeros(x.shape[0], k - 1, x.shape[2]) if prev is None else prev
    xx = torch.cat([prev.to(x.dtype), x], dim=1)
    if positions is None:
        y = F.conv1d(xx.transpose(1, 2), conv.weight, conv.bias, groups=x.shape[2]).transpose(1, 2)
        return y, xx[:, xx.shape[1] - (k - 1) :]
    back = torch.arange(k - 1, -1, -1, device=x.device)  # how far back tap j reads: k-1 .. 0
    seen = positions[:, :, None] >= back  # (B, T, k)
    windows = xx.unfold(1, k, 1) * seen[:, :, None, :].to(x.dtype)  # (B, T, C, k)
    y = torch.einsum("btck,ck->btc", windows, conv.weight[:, 0].to(x.dtype))
    if conv.bias is not None:
        y = y + conv.bias.to(x.dtype)
    # the last k-1 inputs, those before the last document's start zeroed: i back from the end
    # (i = k-1 .. 1) belongs to it iff the last position is at least i - 1 into it
    kept = positions[:, -1:] >= torch.arange(k - 2, -1, -1, device=x.device)  # (B, k-1)
    return y, xx[:, xx.shape[1] - (k - 1) :] * kept[:, :, None].to(x.dtype)


def add_positions(x: Tensor, table: Tensor, positions: Tensor) -> Tensor:
    """x (B, T, C) plus the learned embeddings (max_positions, C) of positions (B, T)."""
    if int(positions.max()) >= table.shape[0]:
        raise ValueError(
            f"attention position {int(positions.max())} is past max_positions="
            f"{table.shape[0]}; raise model.mixer.max_positions"
        )
    return x + table[positions].to(x.dtype)
