"""RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + eps) * w over the last dim.

    rms_norm(x, weight, eps, out_dtype=None)

On CPU, for float32 x and weight (y in float32 or bfloat16: what CPU bf16 autocast's next
matmul reads) or all float64, the custom op runs the compiled kernel in norm/rms_norm.c
(norm/cpu.py): one pass per row forward, one backward; the weight gradient is summed per
block of 32 rows, so it does not depend on the thread count. Elsewhere, with backend="naive"
or ZOO_KERNELS_CPP=0, norm/naive.py through autograd. One node under torch.compile.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._custom_op import define
from . import cpu, naive


def _norm(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    return cpu.forward(x2, weight.contiguous(), eps, out_dtype, tuple(x.shape))


def _norm_fake(x, weight, eps, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype), x.new_empty(x.shape[:-1])


def _norm_bwd(x: Tensor, weight: Tensor, rstd: Tensor, g: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    n = x.shape[-1]
    x2, g2 = x.reshape(-1, n).contiguous(), g.reshape(-1, n).contiguous()
    return cpu.backward(x2, weight.contiguous(), rstd.reshape(-1).contiguous(), g2, eps, tuple(x.shape))


def _norm_bwd_fake(x, weight, rstd, g, eps):
    return x.new_empty(x.shape), weight.new_empty(weight.shape)


_norm_bwd_op = define("rms_norm_backward", _norm_bwd, _norm_bwd_fake)


def _setup(ctx, inputs, output):
    x, weight, eps, _ = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.eps = eps


def _backward(ctx, gy, _grstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dw = _norm_bwd_op(x, weight, rstd, gy, ctx.eps)
    return dx, dw, None, None


_norm_op = define("rms_norm", _norm, _norm_fake, backward=_backward, setup=_setup)


def rms_norm(
    x: Tensor, weight: Tensor, eps: float = 1e-5, out_dtype: torch.dtype | None = None, backend: str = "auto"
) -> Tensor:
    """x / sqrt(mean(x^2, -1) + eps) * weight, in `out_dtype` (default x's dtype)."""
    out_dtype = out_dtype or x.dtype
    if backend != "naive" and cpu.usable(x, weight, out_dtype):
        return _norm_op(x, weight, eps, out_dtype)[0]
    return naive.rms_norm(x, weight, eps, out_dtype)
