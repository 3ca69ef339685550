"""RMSNorm on CPU (rms_norm.c): one pass per row forward (y, and 1/rms saved), one backward
(dx, and the weight gradient per block of rows, summed here). x is (rows, n), contiguous."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import cbuild

SIGNATURE = cbuild.Signature(
    "zoo_rms_norm",
    """
    int backward, int f64, int ybf16, ptr x, ptr w, ptr g, ptr rin, ptr y, ptr rout, ptr dx, ptr dwp, i64 rows,
    i64 n, double eps, int threads""",
)
#: Rows per weight-gradient partial (NORM_BLOCK in rms_norm.c).
BLOCK = 32


def usable(x: Tensor, weight: Tensor, out_dtype: torch.dtype) -> bool:
    """float32 x and weight (out float32 or bfloat16), or all float64; CPU; the C library built."""
    if x.device.type != "cpu" or weight.device.type != "cpu" or x.numel() == 0 or weight.dtype != x.dtype:
        return False
    ok = (x.dtype == torch.float32 and out_dtype in (torch.float32, torch.bfloat16)) or (
        x.dtype == torch.float64 and out_dtype == torch.float64
    )
    return ok and cbuild.available()


def forward(
    x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype, shape: tuple[int, ...] | None = None
) -> tuple[Tensor, Tensor]:
    """(y, rstd): y in out_dtype and rstd in x's dtype, allocated as `shape` and `shape[:-1]`
    (default x's (rows, n)): tensors of their own, not views."""
    shape = shape or tuple(x.shape)
    y, rstd = torch.empty(shape, dtype=out_dtype), torch.empty(shape[:-1], dtype=x.dtype)
    _call(False, x, weight, eps, out_dtype, y=y, rout=rstd)
    return y, rstd


def backward(
    x: Tensor, weight: Tensor, rstd: Tensor, g: Tensor, eps: float, shape: tuple[int, ...] | None = None
) -> tuple[Tensor, Tensor]:
    """(dx, dweight) from the saved x, rstd and the output gradient g (y's dtype); dx allocated as
    `shape` (default x's)."""
    rows, n = x.shape
    dx, dwp = torch.empty(shape or x.shape, dtype=x.dtype), torch.empty(-(-rows // BLOCK), n, dtype=x.dtype)
    _call(True, x, weight, eps, g.dtype, g=g, rin=rstd, dx=dx, dwp=dwp)
    return dx, dwp.sum(0)


def _call(backward: bool, x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype, **args: Tensor) -> None:
    rows, n = x.shape
    cbuild.function(SIGNATURE)(
        backward=int(backward),
        f64=int(x.dtype == torch.float64),
        ybf16=int(out_dtype == torch.bfloat16),
        x=x,
        w=weight,
        rows=rows,
        n=n,
        eps=eps,
        threads=cbuild.threads(x.numel()),
        **args,
    )
