"""A short depthwise causal convolution over time, with the state `step` needs.

Shared by the recurrent plugins (Hawk's width-4 conv, the minGRU/minLSTM option).

y_t = b + sum_j w_j * x_{t-k+1+j} per channel; the state is the last k-1
inputs (B, k-1, C), zeros before the first token.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalConv(nn.Module):
    def __init__(self, channels: int, width: int, bias: bool = False) -> None:
        super().__init__()
        self.channels, self.width = channels, width
        self.weight = nn.Parameter(torch.empty(channels, width))  # w[:, -1] multiplies x_t
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.width)  # fan-in of a depthwise filter is its width
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def init_state(self, batch_size: int, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch_size, self.width - 1, self.channels,
                           device=device or self.weight.device, dtype=dtype or self.weight.dtype)

    def forward(self, x: Tensor, prev: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """x (B, T, C), prev (B, k-1, C) or None -> y (B, T, C), new state (B, k-1, C)."""
        if prev is None:
            prev = x.new_zeros(x.shape[0], self.width - 1, self.channels)
        xx = torch.cat([prev.to(x.dtype), x], dim=1)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        y = F.conv1d(xx.transpose(1, 2), self.weight[:, None, :].to(x.dtype), bias, groups=self.channels)
        return y.transpose(1, 2), self._keep(xx)

    def step(self, x: Tensor, prev: Tensor) -> Tuple[Tensor, Tensor]:
        """x (B, C): one token."""
        xx = torch.cat([prev.to(x.dtype), x[:, None]], dim=1)  # (B, k, C)
        y = (xx * self.weight.t().to(x.dtype)).sum(1)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y, self._keep(xx)

    def _keep(self, xx: Tensor) -> Tensor:
        # Stored in the parameter dtype so the state matches init_state under autocast.
        return xx[:, xx.shape[1] - (self.width - 1):].to(self.weight.dtype)

    def flops_per_token(self) -> float:
        return 2.0 * self.width * self.channels
