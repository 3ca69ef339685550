"""What the attention mixer may do to its input before q, k and v, both options off by default.

conv=k:            x_t <- b + sum_j w_j * x_{t-k+1+j}   per channel, causal (Zoology's
                   Hybrid[BaseConv, MHA]: it hands each position its predecessors)
position=learned:  x_t <- x_t + P[pos_t]                absolute positions (Zoology's attention)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def short_conv(conv: nn.Conv1d, x: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor]:
    """The causal depthwise conv over x (B, T, C) after `prev`, the last k-1 inputs of the
    previous segment (None: zeros, a stream's start); returns y and the new last k-1 inputs."""
    k = conv.kernel_size[0]
    prev = x.new_zeros(x.shape[0], k - 1, x.shape[2]) if prev is None else prev
    xx = torch.cat([prev.to(x.dtype), x], dim=1)
    y = F.conv1d(xx.transpose(1, 2), conv.weight, conv.bias, groups=x.shape[2]).transpose(1, 2)
    return y, xx[:, xx.shape[1] - (k - 1) :]


def add_positions(x: Tensor, table: Tensor, positions: Tensor) -> Tensor:
    """x (B, T, C) plus the learned embeddings (max_positions, C) of positions (B, T)."""
    if int(positions.max()) >= table.shape[0]:
        raise ValueError(
            f"attention position {int(positions.max())} is past max_positions="
            f"{table.shape[0]}; raise model.mixer.max_positions"
        )
    return x + table[positions].to(x.dtype)
