"""RoPE's rotation on CPU (rotary.c): one pass reads x (any batch, time and head strides) and
writes y contiguous, as (B, T, H, D) or heads first (B, H, T, D); sign -1 rotates back (the
backward)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import cbuild

SIGNATURE = cbuild.Signature(
    "zoo_rotary",
    """
    int dtype, int sign, ptr x, ptr cs, ptr sn, ptr y, i64 B, i64 T, i64 H, i64 D, i64 R, i64* st, int threads""",
)
DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}


def usable(x: Tensor, cos: Tensor) -> bool:
    """CPU x of a dtype in DTYPES, 4-d with contiguous last dim; cos in float32 (float64 with
    float64 x); the C library built."""
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (
        x.device.type == "cpu"
        and x.dtype in DTYPES
        and x.dim() == 4
        and x.stride(-1) == 1
        and x.numel() > 0
        and cos.dtype == work
        and cbuild.available()
    )


def rotate(x: Tensor, cos: Tensor, sin: Tensor, sign: int = 1, heads_first: bool = False) -> Tensor:
    """x (B, T, H, D) rotated; returned contiguous as (B, H, T, D) if heads_first, else (B, T, H, D)."""
    B, T, H, D = x.shape
    y = torch.empty((B, H, T, D) if heads_first else (B, T, H, D), dtype=x.dtype)
    y_bthd = y.transpose(1, 2) if heads_first else y
    cbuild.function(SIGNATURE)(
        dtype=DTYPES[x.dtype],
        sign=sign,
        x=x,
        cs=cos,
        sn=sin,
        y=y,
        B=B,
        T=T,
        H=H,
        D=D,
        R=2 * cos.shape[-1],
        st=(x.stride(0), x.stride(1), x.stride(2), y_bthd.stride(0), y_bthd.stride(1), y_bthd.stride(2)),
        threads=cbuild.threads(x.numel()),
    )
    return y
