"""Griffin's RG-LRU (arXiv 2402.19427) with its gates fused into the scan.

One dispatch over the three backends (zoo_kernels.backends): `naive.py` (the definition),
`chunk.py` (the torch backend: the compiled C kernel, `cpu.py` + `rg_lru.c`, where it
applies, else in-place PyTorch passes around the chunked linear scan) and `triton.py`.
"""

from __future__ import annotations

from torch import Tensor

from .. import backends
from .._custom_op import define, grad_or_zeros
from .._tensors import acc_dtype
from ..scan import check, check_resets, states_fake
from . import chunk, naive

Opt = Tensor | None  # an optional tensor argument of the ops (h0, resets)


def _impl(backend: str):
    return chunk if backend == "torch" else backends.triton_module("rglru.triton")


def _rg_lru_bwd(
    x: Tensor,
    r_pre: Tensor,
    i_pre: Tensor,
    a_param: Tensor,
    c: float,
    h0: Tensor | None,
    h: Tensor,
    g: Tensor,
    g_last: Tensor,
    resets: Tensor | None,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = _impl(backend).rg_lru_bwd(x, r_pre, i_pre, a_param, c, h0, h, g, g_last, resets)
    return tuple(d.to(t.dtype) for d, t in zip(grads, (x, r_pre, i_pre, a_param, g_last)))


_rg_lru_bwd_op = define(
    "rg_lru_fused_backward",
    _rg_lru_bwd,
    lambda x, r_pre, i_pre, a_param, c, h0, h, g, g_last, resets, backend: tuple(
        t.new_empty(t.shape) for t in (x, r_pre, i_pre, a_param, g_last)
    ),
)


def _rg_lru_setup(ctx, inputs, output):
    x, r_pre, i_pre, a_param, c, h0, resets, backend = inputs
    ctx.save_for_backward(x, r_pre, i_pre, a_param, h0, output[0], resets)
    ctx.c, ctx.backend, ctx.has_resets = c, backend, resets is not None


def _rg_lru_backward(ctx, g, g_last):
    x, r_pre, i_pre, a_param, h0, h, resets = ctx.saved_tensors
    resets = resets if ctx.has_resets else None
    g = grad_or_zeros(g, h.shape, h)
    g_last = grad_or_zeros(g_last, (h.shape[0], h.shape[2]), h, acc_dtype(x, r_pre, i_pre))
    dx, dr, di, dap, dh0 = _rg_lru_bwd_op(x, r_pre, i_pre, a_param, ctx.c, h0, h, g, g_last, resets, ctx.backend)
    return dx, dr, di, dap, None, (None if h0 is None else dh0.to(h0.dtype)), None, None


def _rg_lru(
    x: Tensor, r_pre: Tensor, i_pre: Tensor, a_param: Tensor, c: float, h0: Opt, resets: Opt, backend: str
) -> tuple[Tensor, Tensor]:
    return _impl(backend).rg_lru_fwd(x, r_pre, i_pre, a_param, c, h0, resets)


_rg_lru_op = define(
    "rg_lru_fused",
    _rg_lru,
    lambda x, r_pre, i_pre, a_param, c, h0, resets, backend: states_fake(x, x, r_pre, i_pre),
    backward=_rg_lru_backward,
    setup=_rg_lru_setup,
)


def rg_lru(
    x: Tensor,
    r_pre: Tensor,
    i_pre: Tensor,
    a_param: Tensor,
    c: float = 8.0,
    h0: Tensor | None = None,
    *,
    resets: Tensor | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Griffin's RG-LRU (arXiv 2402.19427) with its gates fused into the scan.

    r = sigmoid(r_pre), i = sigmoid(i_pre), log a = -c r softplus(-a_param),
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t). a_param is (channels,).
    resets: (batch, time) bool or None, True where a document starts: there a_t = 0 and the
    normaliser sqrt(1 - a_t^2) is 1 (h_t = i_t x_t), as in RecurrentGemma.
    backend: naive | torch | triton, by default the one zoo_kernels.backends picks for x.
    """
    check("rg_lru", x, r_pre, h0)
    check("rg_lru", x, i_pre, h0)
    if a_param.shape != (x.shape[2],):
        raise ValueError(f"rg_lru: a_param must be (channels,) = ({x.shape[2]},), got {tuple(a_param.shape)}")
    resets = check_resets("rg_lru", x, resets)
    backend = backends.select(x, backend)
    if backend == "naive":
        return naive.rg_lru(x, r_pre, i_pre, a_param, c, h0, resets)
    return _rg_lru_op(x, r_pre, i_pre, a_param, float(c), h0, resets, backend)
