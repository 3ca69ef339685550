"""The one way zoo_kernels registers an op with torch.library.

Every fast path (C kernel or Triton kernels) is a custom op with a fake kernel, and
those with a backward register it as a second custom op, so torch.compile traces each
as one node without graph breaks. `define` does the registration; `grad_or_zeros`
fills an output's gradient that autograd left as None.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def define(
    name: str, impl: Callable, fake: Callable, *, backward: Callable | None = None, setup: Callable | None = None
):
    """The custom op zoo_kernels::<name> running `impl` (its schema from impl's annotations),
    with `fake` as its fake kernel and, when given, `backward` / `setup` as its autograd."""
    op = torch.library.custom_op(f"zoo_kernels::{name}", impl, mutates_args=())
    op.register_fake(fake)
    if backward is not None:
        op.register_autograd(backward, setup_context=setup)
    return op


def grad_or_zeros(g: torch.Tensor | None, shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """g, or zeros of `shape` (like's device, `dtype` or like's dtype) when autograd passed None."""
    if g is not None:
        return g
    return torch.zeros(shape, dtype=dtype or like.dtype, device=like.device)
