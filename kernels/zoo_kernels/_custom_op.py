"""The one way zoo_kernels registers an op with torch.library.

Every fast path (C kernel or Triton kernels) is a custom op with a fake kernel, and
those with a backward register it as a second custom op, so torch.compile traces each
as one node without graph breaks. `define` does the registration and returns an `Op`:
called in eager mode it runs the implementation directly (through a plain
autograd.Function when it needs a graph), since the custom op's Python dispatch
(autograd wrapper, redispatch, default filling) costs about twice the work of a small
layer's forward and backward (benchmarks/kernels/op_overhead.py); under torch.compile, a
dispatch mode or a tensor subclass it calls the custom op. `grad_or_zeros` fills an
output's gradient that autograd left as None.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode


class Op:
    """A zoo_kernels op: `op` is the registered custom op (for torch.compile, opcheck and
    torch.ops.zoo_kernels); calling an Op runs the same implementation and autograd formula."""

    def __init__(self, op, impl: Callable, backward: Callable | None, setup: Callable | None) -> None:
        self.op, self.impl = op, impl
        self.function = None if backward is None else _function(op._name, impl, backward, setup)

    def __call__(self, *args):
        flat = (t for a in args for t in (a if isinstance(a, (list, tuple)) else (a,)))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None or not _plain(tensors):
            return self.op(*args)
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return self.impl(*args)
        if self.function is None:  # no autograd formula: the custom op raises as it should
            return self.op(*args)
        return self.function.apply(*args)


def _plain(tensors: list[torch.Tensor]) -> bool:
    """Only plain tensors and parameters: a subclass (DTensor, FakeTensor, a user's own) may
    mean anything by its data, and the custom op dispatches it properly."""
    return all(type(t) is torch.Tensor or type(t) is torch.nn.Parameter for t in tensors)


def _function(name: str, impl: Callable, backward: Callable, setup: Callable | None) -> type:
    """The op's autograd as a torch.autograd.Function: forward runs impl and the op's
    setup_context on the same ctx; backward is the op's."""

    def forward(ctx, *args):
        out = impl(*args)
        if setup is not None:
            setup(ctx=ctx, inputs=args, output=out)
        return out

    return type(
        f"Eager_{name.replace('::', '_')}",
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(backward)},
    )


def define(
    name: str, impl: Callable, fake: Callable, *, backward: Callable | None = None, setup: Callable | None = None
) -> Op:
    """The custom op zoo_kernels::<name> running `impl` (its schema from impl's annotations),
    with `fake` as its fake kernel and, when given, `backward` / `setup` as its autograd."""
    op = torch.library.custom_op(f"zoo_kernels::{name}", impl, mutates_args=())
    op.register_fake(fake)
    if backward is not None:
        op.register_autograd(backward, setup_context=setup)
    return Op(op, impl, backward, setup)


def grad_or_zeros(g: torch.Tensor | None, shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """g, or zeros of `shape` (like's device, `dtype` or like's dtype) when autograd passed None."""
    if g is not None:
        return g
    return torch.zeros(shape, dtype=dtype or like.dtype, device=like.device)
