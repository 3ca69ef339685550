"""Mamba-1's selective scan (Gu & Dao 2023, eq. 2a-2b) with a diagonal (D, N) state:

    h_t = exp(dt_t A) * h_{t-1} + dt_t u_t B_t        y_t = C_t . h_t

u, dt (batch, T, D); A (D, N); B, C (batch, T, N); h0 (batch, D, N) or None;
resets (batch, T) bool or None: True where a document starts, whose decay exp(dt_t A) is
then 0 (h_t = dt_t u_t B_t), on every path, forward and backward. Returns y (batch, T, D)
in u's dtype and h_T (batch, D, N) in float32 (float64 for float64 inputs).

One dispatch over four paths, by backend (zoo_kernels.backends):
- naive (`naive.py`): one step per token, the definition.
- torch (`cpu.py`, `selective_scan.c`): the fused compiled CPU kernel, which never
  stores the (batch, T, D, N) tensors; without a C compiler (or ZOO_KERNELS_CPP=0),
  the flat path.
- triton (`triton.py`): the same idea on the GPU: each (time tile, channel block) of
  the state lives in registers, and only a checkpoint per tile of BLOCK_T steps is
  stored for the backward. Under TRITON_INTERPRET=1 it also runs on CPU tensors (for
  the tests). For a state it refuses (N > 256 at its shipped block sizes), the flat
  path, with a warning.
- flat (`flat.py`): the decays and inputs materialised as (batch, T, D*N) channels and
  handed to `linear_scan`: only the fallback.
Both fused paths are custom ops (zoo_kernels._custom_op), so torch.compile traces them
without graph breaks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import backends, cbuild
from .._custom_op import define, grad_or_zeros
from .._tensors import acc_dtype
from . import cpu
from .flat import selective_scan_flat
from .naive import selective_scan_naive

__all__ = [
    "selective_scan",
    "selective_scan_naive",
    "selective_scan_flat",
    "selective_scan_fused",
    "selective_scan_triton",
]


def _ts():
    return backends.triton_module("selective.triton")


def _grads_fake(dh0_dtype=None):
    """The fake of a backward op: gradients shaped like the inputs, dh0 in dh0_dtype (default: u's)."""

    def fake(u, dt, A, B, C, ck, gy, ghl, want_dh0, resets=None):
        b, T, D = u.shape
        N = A.shape[1]
        return (
            u.new_empty(u.shape),
            dt.new_empty(dt.shape),
            A.new_empty(A.shape),
            B.new_empty((b, T, N)),
            C.new_empty((b, T, N)),
            u.new_empty((b, D, N) if want_dh0 else (0,), dtype=dh0_dtype or u.dtype),
        )

    return fake


def _setup(ctx, inputs, output):
    u, dt, A, B, C, h0, resets = inputs
    # the checkpoints: the backward recomputes the states
    ctx.save_for_backward(u, dt, A, B, C, output[2], resets)
    ctx.h0_dtype = None if h0 is None else h0.dtype


def _backward_with(bwd_op, ghl_dtype=None):
    """The autograd backward of a fused op whose backward op is `bwd_op`; a missing gradient
    of h_T becomes zeros in ghl_dtype (default: u's)."""

    def backward(ctx, gy, ghl, _gck):
        u, dt, A, B, C, ck, resets = ctx.saved_tensors
        want_dh0 = ctx.h0_dtype is not None and ctx.needs_input_grad[5]
        gy = grad_or_zeros(gy, u.shape, u)
        ghl = grad_or_zeros(ghl, (u.shape[0], A.shape[0], A.shape[1]), u, ghl_dtype)
        du, ddt, dA, dB, dC, dh0 = bwd_op(u, dt, A, B, C, ck, gy, ghl, want_dh0, resets)
        return du, ddt, dA, dB, dC, (dh0.to(ctx.h0_dtype) if want_dh0 else None), None

    return backward


def _impls(kernels: Callable[[], Any], contiguous_grads: bool):
    """The forward and backward impls of a fused path's custom ops: kernels() is the module with its
    selective_scan_fwd / selective_scan_bwd (the C kernel wants contiguous incoming gradients)."""

    def fwd(
        u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, resets: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        return kernels().selective_scan_fwd(u, dt, A, B, C, h0, resets)

    def bwd(
        u: Tensor,
        dt: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        ck: Tensor,
        gy: Tensor,
        ghl: Tensor,
        want_dh0: bool,
        resets: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        if contiguous_grads:
            gy, ghl = gy.contiguous(), ghl.contiguous()
        return kernels().selective_scan_bwd(u, dt, A, B, C, ck, gy, ghl, want_dh0, resets)

    return fwd, bwd


# ---- the fused CPU kernel (cpu.py) ----------------------------------------------------------------

_fused, _fused_bwd = _impls(lambda: cpu, contiguous_grads=True)


def _fused_fake(u, dt, A, B, C, h0, resets=None):
    b, T, D = u.shape
    N = A.shape[1]
    return u.new_empty(u.shape), u.new_empty(b, D, N), u.new_empty(b, cpu.n_checkpoints(T), D, N)


_fused_bwd_op = define("selective_scan_fused_backward", _fused_bwd, _grads_fake())
_fused_op = define("selective_scan_fused", _fused, _fused_fake, backward=_backward_with(_fused_bwd_op), setup=_setup)


def fused_usable(u: Tensor) -> bool:
    return u.device.type == "cpu" and cbuild.available()


def selective_scan_fused(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None, resets: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    acc = acc_dtype(u)
    args = [t.to(acc).contiguous() for t in (u, dt, A, B, C)]
    y, hl, _ = _fused_op(*args, None if h0 is None else h0.to(acc).contiguous(), resets)
    return y.to(u.dtype), hl


# ---- the fused Triton kernels (triton.py, imported only when they run) ----------------------------


_triton, _triton_bwd = _impls(_ts, contiguous_grads=False)


def _triton_fake(u, dt, A, B, C, h0, resets=None):
    b, T, D = u.shape
    N = A.shape[1]
    return (
        u.new_empty(u.shape),
        u.new_empty((b, D, N), dtype=acc_dtype(u)),
        u.new_empty((b, _ts().n_tiles(T), D, N), dtype=torch.float32),
    )


_triton_bwd_op = define("selective_scan_triton_backward", _triton_bwd, _grads_fake(torch.float32))
_triton_op = define(
    "selective_scan_triton", _triton, _triton_fake, backward=_backward_with(_triton_bwd_op, torch.float32), setup=_setup
)


@torch.compiler.assume_constant_result
def _triton_refusal(N: int) -> str:
    """Why the fused Triton kernels refuse a state of size N ('' if they take it). torch.compile
    runs it once while tracing (it imports triton, which dynamo must not trace)."""
    return _ts().unsupported(N) or ""


def selective_scan_triton(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None, resets: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The fused Triton path (CUDA tensors; CPU tensors under TRITON_INTERPRET=1). Any strides and
    float dtypes; computes in float32."""
    y, hl, _ = _triton_op(u, dt, A, B, C, h0, resets)
    return y, hl


def selective_scan(
    u: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    h0: Tensor | None = None,
    *,
    backend: str | None = None,
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The selective scan on the best path for u's device (see the module docstring).

    backend: naive | torch | triton, by default the one zoo_kernels.backends picks for u
    (ZOO_KERNELS forces one). ZOO_KERNELS_CPP=0 (or no C compiler) gives the flat path on
    CPU. The triton backend (the default for CUDA tensors) takes the fused Triton kernels,
    and the flat path, with a warning, for a shape they refuse.
    """
    b, T, D = u.shape
    if (
        dt.shape != u.shape
        or A.dim() != 2
        or A.shape[0] != D
        or B.shape != (b, T, A.shape[1])
        or C.shape != B.shape
        or (h0 is not None and h0.shape != (b, D, A.shape[1]))
        or (resets is not None and resets.shape != (b, T))
        or T < 1
    ):
        raise ValueError(
            f"selective_scan: expected u, dt (b, T, D), A (D, N), B, C (b, T, N), h0 (b, D, N) "
            f"and resets (b, T) with T >= 1; got u {tuple(u.shape)}, dt {tuple(dt.shape)}, A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}, C {tuple(C.shape)}, h0 {None if h0 is None else tuple(h0.shape)}, "
            f"resets {None if resets is None else tuple(resets.shape)}"
        )
    if resets is not None:
        resets = resets.to(torch.bool)
    backend = backends.select(u, backend)
    if backend == "naive":
        return selective_scan_naive(u, dt, A, B, C, h0, resets)
    if backend == "torch" and fused_usable(u):
        return selective_scan_fused(u, dt, A, B, C, h0, resets)
    if backend == "triton":
        why = _triton_refusal(A.shape[1])
        if not why:
            if torch.compiler.is_compiling():  # a launch error cannot be caught inside a compiled graph
                return selective_scan_triton(u, dt, A, B, C, h0, resets)
            try:
                return selective_scan_triton(u, dt, A, B, C, h0, resets)
            except _ts().LAUNCH_ERRORS as err:
                why = f"{type(err).__name__}: {err}"
        warnings.warn(
            f"zoo_kernels.selective_scan: the fused Triton kernel cannot take this call ({why}); "
            "falling back to the flat path, which materialises (batch, T, D, N) tensors",
            stacklevel=2,
        )
    return selective_scan_flat(u, dt, A, B, C, h0, resets)
