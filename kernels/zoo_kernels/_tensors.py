"""Tensor helpers every op shares."""

from __future__ import annotations

import functools

import torch


def acc_dtype(*ts) -> torch.dtype:
    """States accumulate in float32, or float64 when an input is float64."""
    return functools.reduce(torch.promote_types, [t.dtype for t in ts], torch.float32)


def channels_contiguous(*ts, dtype=None):
    """The tensors (in `dtype` if given) with unit channel stride, copying only where needed;
    None stays None. Batch and time strides are kept: the kernels take any."""
    out = []
    for t in ts:
        if t is not None:
            t = t if dtype is None else t.to(dtype)
            t = t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()
        out.append(t)
    return out
