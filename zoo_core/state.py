"""Generic operations on mixer states (pytrees of batch-first tensors)."""

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

State = Any


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    return tree_map(lambda t: fn(t) if isinstance(t, torch.Tensor) else t, state)


def detach_state(state: State) -> State:
    """Truncated BPTT: keep the values, drop the graph."""
    return map_state(lambda t: t.detach(), state)


def select_rows(state: State, rows: Any) -> State:
    return map_state(lambda t: t[rows], state)
