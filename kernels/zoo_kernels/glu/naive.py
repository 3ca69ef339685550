"""The gated activation as the equation writes it: act(gate) * value, through autograd.
The reference the compiled kernel is tested against, and the path of other devices."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("silu", "gelu_tanh")


def act(name: str, x: Tensor) -> Tensor:
    return F.silu(x) if name == "silu" else F.gelu(x, approximate="tanh")


def gated(gate: Tensor, value: Tensor, name: str) -> Tensor:
    return act(name, gate) * value
