"""Mamba-2's state-space duality (SSD) scan, one dispatch over three paths:

- `naive.ssd_naive`: one step per token, the recurrence of Dao & Gu 2024 (the specification);
- `chunk.ssd_chunked`: the chunked algorithm in plain PyTorch (CPU fast path);
- `triton`: the chunked algorithm as Triton kernels with their own backward (CUDA tensors;
  CPU tensors under TRITON_INTERPRET=1, for the tests), as custom ops (zoo_kernels._custom_op) with
  fake kernels and a registered autograd, so torch.compile traces them as single nodes.

    h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T        y_t = h_t C_t

x (batch, T, H, P); dt (batch, T, H), already positive (softplus'ed); A (H,) negative;
B, C (batch, T, G, N) with G dividing H; h0 (batch, H, P, N) or None; resets (batch, T) bool or
None, True where a document starts (that step's decay is 0: h_t = dt_t x_t B_t^T), on every path,
forward and backward; the chunked paths keep it inside the chunk math (chunk.py). Returns
y (batch, T, H, P) in x's dtype and h_T (batch, H, P, N) in float32 (float64 for float64 x).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import backends
from .._custom_op import define, grad_or_zeros
from .._tensors import acc_dtype
from .chunk import ssd_chunked
from .naive import ssd_naive

__all__ = ["ssd_scan", "ssd_naive", "ssd_chunked", "ssd_triton"]


def _kernels():
    return backends.triton_module("ssd.triton")


OptTensor = Tensor | None  # the custom ops' optional tensors: h0, resets


def _ssd(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, h0: OptTensor, resets: OptTensor = None
) -> tuple[Tensor, Tensor]:
    return _kernels().ssd_fwd(x, dt, A.contiguous(), B, C, chunk_size, h0, resets)


def _ssd_bwd(
    saved: list[OptTensor], chunk_size: int, gy: Tensor, gh: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The backward from what the forward saved (`_setup`): [x, dt, A, B, C, h0, resets]."""
    x, dt, A, B, C, h0, resets = saved
    return _kernels().ssd_bwd(x, dt, A.contiguous(), B, C, chunk_size, h0, resets, gy, gh)


def _fake(x, dt, A, B, C, chunk_size, h0, resets=None):
    b, _, H, P = x.shape
    return x.new_empty(x.shape), x.new_empty((b, H, P, B.shape[3]), dtype=acc_dtype(x))


def _bwd_fake(saved, chunk_size, gy, gh):
    return tuple(t.new_empty(t.shape) for t in (*saved[:5], gh))


_ssd_bwd_op = define("ssd_triton_backward", _ssd_bwd, _bwd_fake)


def _setup(ctx, inputs, output):
    x, dt, A, B, C, chunk_size, h0, resets = inputs
    ctx.save_for_backward(x, dt, A, B, C, h0, resets)  # the backward recomputes the chunk states
    ctx.chunk_size = chunk_size


def _backward(ctx, gy, gh):
    x, dt, A, B, C, h0, resets = ctx.saved_tensors
    b, _, H, P = x.shape
    gy = grad_or_zeros(gy, x.shape, x)
    gh = grad_or_zeros(gh, (b, H, P, B.shape[3]), x, acc_dtype(x))
    dx, ddt, dA, dB, dC, dh0 = _ssd_bwd_op(list(ctx.saved_tensors), ctx.chunk_size, gy, gh)
    return dx, ddt, dA, dB, dC, None, (None if h0 is None else dh0.to(h0.dtype)), None


_ssd_op = define("ssd_triton", _ssd, _fake, backward=_backward, setup=_setup)


def ssd_triton(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, h0: OptTensor = None, resets=None
) -> tuple[Tensor, Tensor]:
    """The Triton kernels (see ssd/triton.py); any strides, float dtypes; resets (b, T) bool or None."""
    return _ssd_op(x, dt, A, B, C, int(chunk_size), h0, None if resets is None else resets.to(torch.bool))


def _check(x, dt, A, B, C, chunk_size, h0, resets=None) -> None:
    ok = x.dim() == 4 and B.dim() == 4 and x.shape[1] >= 1 and chunk_size >= 1
    if ok:
        b, T, H, P = x.shape
        G, N = B.shape[2], B.shape[3]
        ok = (
            dt.shape == (b, T, H)
            and A.shape == (H,)
            and B.shape[:2] == (b, T)
            and C.shape == B.shape
            and H % G == 0
            and (h0 is None or h0.shape == (b, H, P, N))
            and (resets is None or resets.shape == (b, T))
        )
    if not ok:
        raise ValueError(
            "ssd_scan: expected x (b, T, H, P), dt (b, T, H), A (H,), B, C (b, T, G, N) with G dividing H, "
            "h0 (b, H, P, N), resets (b, T), T >= 1 and chunk_size >= 1; "
            f"got x {tuple(x.shape)}, dt {tuple(dt.shape)}, "
            f"A {tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}, "
            f"h0 {None if h0 is None else tuple(h0.shape)}, "
            f"resets {None if resets is None else tuple(resets.shape)}, chunk_size {chunk_size}"
        )


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    h0: Tensor | None = None,
    *,
    backend: str | None = None,
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The SSD scan on `backend` (naive | torch | triton), by default the one zoo_kernels.backends
    picks for x (triton for CUDA tensors when triton is installed; ZOO_KERNELS forces one).
    resets (b, T) bool: True where a document starts (see the module docstring)."""
    _check(x, dt, A, B, C, chunk_size, h0, resets)
    backend = backends.select(x, backend)
    if backend == "naive":
        return ssd_naive(x, dt, A, B, C, h0, resets)
    if backend == "torch":
        return ssd_chunked(x, dt, A, B, C, chunk_size, h0, resets)
    return ssd_triton(x, dt, A, B, C, chunk_size, h0, resets)
