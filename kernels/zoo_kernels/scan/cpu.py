"""The compiled CPU scan (scan.c): one pass over time, channels vectorised, batch rows and
channel blocks split over threads.

The chunked PyTorch cores in `chunk.py` call `linear_scan_into` / `log_linear_scan_into`
here when `cbuild.usable(...)`; otherwise (no compiler, build failed, other dtypes or
layouts, or ``ZOO_KERNELS_CPP=0``) they run their own chunked loops.

The chunked path moves each element through memory several times (two passes plus
strided per-step slices); this one reads a and x and writes h once, which is what the
memory-copy floor allows.
"""

from __future__ import annotations

import torch

from .. import cbuild

SIGNATURE = cbuild.Signature(
    "zoo_scan",
    """
    int kind, ptr a, ptr x, ptr h0, ptr out, ptr last, i64 B, i64 L, i64 D, i64 block,
    i64 sa_b, i64 sa_t, i64 sx_b, i64 sx_t, i64 so_b, i64 so_t, i64 sh_b, int reverse, int threads""",
)
#: `kind` values: linear float32; log float32 (+1: float64).
LINEAR, LOG = 0, 2


def _run(kind: int, a, x, h0, out, reverse: bool) -> torch.Tensor:
    bsz, length, dim = x.shape
    last = torch.empty(bsz, dim, dtype=out.dtype)
    ins = {"a": a, "x": x, "h0": h0, "out": out, "last": last, "B": bsz, "L": length, "D": dim, "reverse": reverse}
    strides = {"sa_b": a.stride(0), "sa_t": a.stride(1), "sx_b": x.stride(0), "sx_t": x.stride(1)}
    strides |= {"so_b": out.stride(0), "so_t": out.stride(1), "sh_b": 0 if h0 is None else h0.stride(0)}
    cbuild.call(SIGNATURE, kind, x, dim, "the compiled scan", **ins, **strides)
    if h0 is None and length == 0:
        last.zero_()
    return last


def linear_scan_into(a, x, h0, out, reverse=False) -> torch.Tensor:
    """out_t = a_t out_{t-1} + x_t (reverse: from the end); returns the final state."""
    return _run(LINEAR, a, x, h0, out, reverse)


def log_linear_scan_into(log_a, log_x, log_h0, out, reverse=False) -> torch.Tensor:
    """out_t = logaddexp(log_a_t + out_{t-1}, log_x_t); returns the final state."""
    return _run(LOG, log_a, log_x, log_h0, out, reverse)
