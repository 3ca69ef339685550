"""The fused causal depthwise conv1d (+ SiLU) on CPU (causal_conv.c): one pass that reads x
and writes y, and a backward that recomputes the pre-activation."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import cbuild

SIGNATURE = cbuild.Signature(
    "zoo_causal_conv",
    """
    int kind, ptr x, ptr prev, ptr rs, ptr wt, ptr bias, ptr gy, ptr y, ptr dx, ptr dprev, ptr dw, ptr db,
    i64* st, i64 B, i64 T, i64 C, i64 W, i64 block, int silu, int threads""",
)
#: `kind` values: forward float32; backward float32 (+1: float64).
FORWARD, BACKWARD = 0, 2


def _call(kind, x, weight, bias, prev, resets, silu, **out):
    bsz, T, C = x.shape
    wt = weight.t().contiguous()  # (W, C): channels contiguous, like x
    bias = x.new_zeros(C) if bias is None else bias.contiguous()  # the kernel always adds one
    cbuild.call(
        SIGNATURE,
        kind,
        x,
        C,
        "the fused causal conv",
        x=x,
        prev=prev,
        rs=resets,
        wt=wt,
        bias=bias,
        **out,
        st=(x.stride(0), x.stride(1), prev.stride(0), prev.stride(1)),
        B=bsz,
        T=T,
        C=C,
        W=weight.shape[1],
        silu=silu,
    )


def conv(x: Tensor, weight: Tensor, bias, prev: Tensor, resets, silu: bool) -> Tensor:
    y = torch.empty(x.shape, dtype=x.dtype)
    _call(FORWARD, x, weight, bias, prev, resets, silu, y=y)
    return y


def conv_backward(x, weight, bias, prev, resets, gy, silu):
    """(dx, dweight, dbias, dprev)."""
    bsz, T, C = x.shape
    W = weight.shape[1]
    dx, dprev = torch.empty(x.shape, dtype=x.dtype), x.new_empty(bsz, W - 1, C)
    dw, db = x.new_empty(bsz, W, C), x.new_empty(bsz, C)  # per batch row, summed here
    _call(BACKWARD, x, weight, bias, prev, resets, silu, gy=gy, dx=dx, dprev=dprev, dw=dw, db=db)
    return dx, dw.sum(0).t().contiguous(), db.sum(0), dprev
