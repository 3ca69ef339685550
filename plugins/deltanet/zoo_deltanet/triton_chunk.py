"""The Triton path: the chunked forward kernel (triton_kernel.py) as a torch custom op.

Forward: the Triton kernel. Backward: NOT a Triton kernel: it recomputes the forward with
the chunked PyTorch path (chunked.py) under autograd and differentiates that. The
gradients are exact (the same function) but the backward runs at PyTorch's speed and
memory. The op has a fake (meta) implementation, so torch.compile traces through it.

Triton is imported on the first call. Without it, CUDA tensors fall back to the chunked
PyTorch path with one warning naming the install command.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
from torch import Tensor

from zoo_deltanet.chunked import chunk_delta_rule, chunk_torch

_warned = False
_said = set()


def warn_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        warnings.warn(message, stacklevel=2)


def triton_installed() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def usable() -> bool:
    """Triton can run here (importable); says so once when it cannot."""
    global _warned
    if triton_installed():
        return True
    if not _warned:
        warnings.warn(
            "zoo-deltanet: triton is not importable, so CUDA tensors take the chunked PyTorch path "
            "(pip install 'zoo-deltanet[triton]')",
            stacklevel=2,
        )
        _warned = True
    return False


def supported_chunk(chunk: int) -> bool:
    """tl.dot wants blocks of at least 16, and the inverse squares up to a power of two."""
    return chunk >= 16 and chunk & (chunk - 1) == 0


@torch.library.custom_op("zoo_deltanet::chunk_delta_rule_fwd", mutates_args=())
def _fwd_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_a: Tensor | None,
    h0: Tensor | None,
    resets: Tensor | None,
    chunk: int,
    scale: float,
) -> tuple[Tensor, Tensor]:
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the Triton delta-rule kernel needs CUDA tensors, or TRITON_INTERPRET=1 on CPU")
    from zoo_deltanet import triton_kernel

    B, T, H, K = q.shape
    V = v.shape[-1]
    c = lambda t: None if t is None else t.contiguous()  # noqa: E731
    q, k, v, beta, log_a, h0 = map(c, (q, k, v, beta, log_a, h0))
    r = None if resets is None else resets.to(torch.int32).contiguous()
    o = torch.empty(B, T, H, V, device=q.device, dtype=q.dtype)
    ht = torch.empty(B, H, K, V, device=q.device, dtype=q.dtype)
    triton_kernel.launch(q, k, v, beta, log_a, h0, r, o, ht, scale, chunk)
    return o, ht


@_fwd_op.register_fake
def _(q, k, v, beta, log_a, h0, resets, chunk, scale):
    B, T, H, K = q.shape
    V = v.shape[-1]
    return q.new_empty(B, T, H, V), q.new_empty(B, H, K, V)


def _setup(ctx, inputs, output):
    q, k, v, beta, log_a, h0, resets, chunk, scale = inputs
    ctx.save_for_backward(q, k, v, beta, log_a, h0, resets)
    ctx.chunk, ctx.scale = chunk, scale


def _backward(ctx, go, ght):
    """Recompute with the chunked PyTorch path and differentiate it (no Triton backward yet)."""
    saved = ctx.saved_tensors
    with torch.enable_grad():
        leaves = [
            None if t is None else t.detach().requires_grad_(ctx.needs_input_grad[i]) for i, t in enumerate(saved)
        ]
        q, k, v, beta, log_a, h0, resets = leaves
        o, ht = chunk_torch(q, k, v, beta, log_a, ctx.chunk, h0, ctx.scale, resets)
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad((o, ht), wanted, (go, ght), allow_unused=True) if wanted else ())
    return (*[next(grads) if t is not None and t.requires_grad else None for t in leaves], None, None)


_fwd_op.register_autograd(_backward, setup_context=_setup)


def forward(q, k, v, beta, log_a, chunk_size, h0, scale, resets) -> tuple[Tensor, Tensor]:
    """chunked.chunk_delta_rule(..., kernel="triton"): computes in float32 (float64 for float64
    inputs) and returns o and the final state in that dtype."""
    if not supported_chunk(chunk_size):
        raise ValueError(
            f"the Triton delta-rule kernel needs chunk_size a power of two >= 16, got {chunk_size}; "
            f"set model.mixer.chunk_size=64 or backend=chunked"
        )
    acc = torch.promote_types(q.dtype, torch.float32)
    to = lambda t: None if t is None else t.to(acc)  # noqa: E731
    return _fwd_op(to(q), to(k), to(v), to(beta), to(log_a), to(h0), resets, chunk_size, scale)


#: chunked.chunk_delta_rule's arguments and contract, forward by the Triton kernel.
chunk_delta_rule_triton = functools.partial(chunk_delta_rule, kernel="triton")
