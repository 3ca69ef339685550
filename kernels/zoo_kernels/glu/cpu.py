"""The fused gated activation on CPU (glu.c): y = act(g) * v in one pass, and a backward
that recomputes act(g) and writes dg and dv in one pass. Operands are (rows, n) with
contiguous rows and any row stride (g and v may be the halves of one tensor)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import cbuild

SIGNATURE = cbuild.Signature(
    "zoo_glu",
    """
    int backward, int act, int dtype, ptr g, ptr v, ptr dy, ptr y, ptr dg, ptr dv, i64 rows, i64 n, i64* st,
    int threads""",
)
DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}
ACTS = {"silu": 0, "gelu_tanh": 1}


def usable(*tensors: Tensor) -> bool:
    """CPU tensors of one dtype in DTYPES, not empty, and the C library built."""
    first = tensors[0]
    return (
        first.dtype in DTYPES
        and first.numel() > 0
        and all(t.device.type == "cpu" and t.dtype == first.dtype for t in tensors)
        and cbuild.available()
    )


def forward(g: Tensor, v: Tensor, act: str, shape: tuple[int, ...] | None = None) -> Tensor:
    """y = act(g) * v, allocated as `shape` (default g's): a tensor of its own, not a view, since
    custom ops and FSDP2's output checks want fresh outputs."""
    y = torch.empty(shape or g.shape, dtype=g.dtype)
    _call(False, act, g, v, y=y.view(g.shape))
    return y


def backward(g: Tensor, v: Tensor, dy: Tensor, dg: Tensor, dv: Tensor, act: str) -> None:
    """Writes dg and dv (views may share one buffer)."""
    _call(True, act, g, v, dy=dy, dg=dg, dv=dv)


def _call(backward: bool, act: str, g: Tensor, v: Tensor, **out: Tensor) -> None:
    rows, n = g.shape
    operands = {"g": g, "v": v, "dy": None, "y": None, "dg": None, "dv": None, **out}
    for name, t in operands.items():
        assert t is None or (t.shape == (rows, n) and t.stride(1) == 1), f"glu: {name} must be ({rows}, {n}) rows"
    cbuild.function(SIGNATURE)(
        backward=int(backward),
        act=ACTS[act],
        dtype=DTYPES[g.dtype],
        rows=rows,
        n=n,
        st=tuple(0 if t is None else t.stride(0) for t in operands.values()),
        threads=cbuild.threads(g.numel()),
        **operands,
    )
