"""The multi-token loss written as the paper's equation, one position at a time.

    L = - sum_t sum_{k=1..n} w_k log P_k(x_{t+k} | z_t)   /  #(next-token targets)

`targets[b, t]` is x_{t+1}, so x_{t+k} is `targets[b, t+k-1]`; a target that
falls outside the window, or is the core's IGNORE_INDEX, contributes nothing. Slow on purpose:
the tests hold the vectorised head (`head.MTPHead`) to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from zoo_core.interfaces import IGNORE_INDEX


def mtp_loss_reference(
    h: Tensor, targets: Tensor, heads: Sequence[Callable[[Tensor], Tensor]], weights: Sequence[float]
) -> Tensor:
    """h (B, T, D) trunk states; heads[k-1](z) -> logits of x_{t+k}; returns the scalar loss."""
    B, T = targets.shape
    total = h.new_zeros((), dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            z = h[b, t]
            for k, (head, w) in enumerate(zip(heads, weights), start=1):
                if t + k - 1 >= T:  # x_{t+k} lies beyond this window
                    continue
                x = int(targets[b, t + k - 1])
                if x == IGNORE_INDEX:
                    continue
                log_p = torch.log_softmax(head(z).double(), dim=-1)
                total = total - w * log_p[x]
    n_next = int((targets != IGNORE_INDEX).sum())
    return total / max(n_next, 1)
