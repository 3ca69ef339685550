"""The three ops with an explicit backend, registered as torch.library custom ops.

Custom ops (with fake kernels and registered autograd) let torch.compile trace
through the scans without graph breaks; the backend name is a plain string
argument, so one op serves the torch and triton implementations.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import backends, naive
from .chunked import acc_dtype

# ---- validation -------------------------------------------------------------


def _check(name: str, first: Tensor, second: Tensor, init: Optional[Tensor]) -> None:
    if first.dim() != 3 or first.shape != second.shape:
        raise ValueError(
            f"{name}: expected two (batch, time, channels) tensors of one shape, "
            f"got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    if first.shape[1] < 1:
        raise ValueError(f"{name}: the time dimension must have at least one step")
    b, _, d = first.shape
    if init is not None and tuple(init.shape) != (b, d):
        raise ValueError(f"{name}: initial state must be (batch, channels) = {(b, d)}, got {tuple(init.shape)}")


# ---- linear_scan --------------------------------------------------------------


@torch.library.custom_op("zoo_kernels::linear_scan", mutates_args=())
def _linear_scan_op(a: Tensor, x: Tensor, h0: Optional[Tensor], backend: str) -> tuple[Tensor, Tensor]:
    return backends.module(backend).linear_scan_fwd(a, x, h0)


@_linear_scan_op.register_fake
def _(a, x, h0, backend):
    return x.new_empty(x.shape), x.new_empty((x.shape[0], x.shape[2]), dtype=acc_dtype(a, x))


@torch.library.custom_op("zoo_kernels::linear_scan_backward", mutates_args=())
def _linear_scan_bwd_op(
    a: Tensor, h: Tensor, h0: Optional[Tensor], g: Tensor, g_last: Tensor, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    da, dx, dh0 = backends.module(backend).linear_scan_bwd(a, h, h0, g, g_last)
    return da.to(a.dtype), dx.to(h.dtype), dh0


@_linear_scan_bwd_op.register_fake
def _(a, h, h0, g, g_last, backend):
    return a.new_empty(a.shape), h.new_empty(h.shape), g_last.new_empty(g_last.shape)


def _linear_scan_setup(ctx, inputs, output):
    a, x, h0, backend = inputs
    ctx.save_for_backward(a, output[0], h0)
    ctx.backend = backend


def _linear_scan_backward(ctx, g, g_last):
    a, h, h0 = ctx.saved_tensors
    if g is None:
        g = torch.zeros_like(h)
    if g_last is None:
        g_last = h.new_zeros((h.shape[0], h.shape[2]), dtype=acc_dtype(a, h))
    da, dx, dh0 = _linear_scan_bwd_op(a, h, h0, g, g_last, ctx.backend)
    return da, dx, (None if h0 is None else dh0.to(h0.dtype)), None


_linear_scan_op.register_autograd(_linear_scan_backward, setup_context=_linear_scan_setup)


def linear_scan(a: Tensor, x: Tensor, h0: Optional[Tensor] = None, *, backend: str):
    _check("linear_scan", a, x, h0)
    if backend == "naive":
        return naive.linear_scan(a, x, h0)
    return _linear_scan_op(a, x, h0, backend)


# ---- log_linear_scan -------------------------------------------------------------


@torch.library.custom_op("zoo_kernels::reverse_scan", mutates_args=())
def _reverse_scan_op(a: Tensor, g: Tensor, g_last: Tensor, backend: str) -> Tensor:
    return backends.module(backend).reverse_scan(a, g, g_last)


@_reverse_scan_op.register_fake
def _(a, g, g_last, backend):
    return g.new_empty(g.shape, dtype=acc_dtype(a, g))


@torch.library.custom_op("zoo_kernels::log_linear_scan", mutates_args=())
def _log_linear_scan_op(
    log_a: Tensor, log_x: Tensor, log_h0: Optional[Tensor], backend: str
) -> tuple[Tensor, Tensor]:
    return backends.module(backend).log_linear_scan_fwd(log_a, log_x, log_h0)


@_log_linear_scan_op.register_fake
def _(log_a, log_x, log_h0, backend):
    acc = acc_dtype(log_a, log_x)
    return log_x.new_empty(log_x.shape), log_x.new_empty((log_x.shape[0], log_x.shape[2]), dtype=acc)


def _log_setup(ctx, inputs, output):
    log_a, log_x, log_h0, backend = inputs
    ctx.save_for_backward(log_a, log_x, log_h0, output[0])
    ctx.backend = backend


def _log_backward(ctx, g, g_last):
    """Backward of y_t = log h_t, kept in ratios that never overflow.

    With w_t = dL/dy_t (total), w_t = g_t + r_{t+1} w_{t+1} where
    r_t = a_t h_{t-1} / h_t = exp(log_a_t + y_{t-1} - y_t) lies in [0, 1];
    dlog_a_t = w_t r_t, dlog_x_t = w_t exp(log_x_t - y_t), dlog_h0 = w_0 r_0.
    """
    log_a, log_x, log_h0, y = ctx.saved_tensors
    acc = acc_dtype(log_a, log_x)
    if y.dtype != acc:
        # y was rounded to bf16/fp16; the ratios below need it exact, so redo it in fp32
        h0 = None if log_h0 is None else log_h0.to(acc)
        y = _log_linear_scan_op(log_a.to(acc), log_x.to(acc), h0, ctx.backend)[0]
    # subtracting -inf (h_t == 0) must give a 0 ratio, not NaN
    y_sub = y.clamp_min(torch.finfo(acc).min)
    # r = exp(log_a_t + y_{t-1} - y_t), built in place: each (B, T, D) temporary costs
    # a page-faulted allocation on CPU once T * D * B * 4 bytes passes 32 MiB
    r = torch.empty_like(y_sub)
    r[:, 1:] = y[:, :-1]
    r[:, 0] = -float("inf") if log_h0 is None else log_h0
    r.add_(log_a).sub_(y_sub).exp_()
    if g is None:
        g = torch.zeros_like(y)
    if g_last is None:
        g_last = torch.zeros_like(y[:, 0])
    w = _reverse_scan_op(r, g, g_last, ctx.backend)
    d_log_h0 = None if log_h0 is None else (w[:, 0] * r[:, 0]).to(log_h0.dtype)
    d_log_a = r.mul_(w).to(log_a.dtype)
    d_log_x = torch.sub(log_x, y_sub, out=y_sub).exp_().mul_(w).to(log_x.dtype)
    return d_log_a, d_log_x, d_log_h0, None


_log_linear_scan_op.register_autograd(_log_backward, setup_context=_log_setup)


def log_linear_scan(log_a: Tensor, log_x: Tensor, log_h0: Optional[Tensor] = None, *, backend: str):
    _check("log_linear_scan", log_a, log_x, log_h0)
    if backend == "naive":
        return naive.log_linear_scan(log_a, log_x, log_h0)
    return _log_linear_scan_op(log_a, log_x, log_h0, backend)


# ---- rg_lru: the gates are fused into the scan's forward and backward --------------


@torch.library.custom_op("zoo_kernels::rg_lru_fused", mutates_args=())
def _rg_lru_op(
    x: Tensor, r_pre: Tensor, i_pre: Tensor, a_param: Tensor, c: float, h0: Optional[Tensor], backend: str
) -> tuple[Tensor, Tensor]:
    return backends.module(backend).rg_lru_fwd(x, r_pre, i_pre, a_param, c, h0)


@_rg_lru_op.register_fake
def _(x, r_pre, i_pre, a_param, c, h0, backend):
    return x.new_empty(x.shape), x.new_empty((x.shape[0], x.shape[2]), dtype=acc_dtype(x, r_pre, i_pre))


@torch.library.custom_op("zoo_kernels::rg_lru_fused_backward", mutates_args=())
def _rg_lru_bwd_op(
    x: Tensor, r_pre: Tensor, i_pre: Tensor, a_param: Tensor, c: float, h0: Optional[Tensor],
    h: Tensor, g: Tensor, g_last: Tensor, backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = backends.module(backend).rg_lru_bwd(x, r_pre, i_pre, a_param, c, h0, h, g, g_last)
    return tuple(d.to(t.dtype) for d, t in zip(grads, (x, r_pre, i_pre, a_param, g_last)))


@_rg_lru_bwd_op.register_fake
def _(x, r_pre, i_pre, a_param, c, h0, h, g, g_last, backend):
    return tuple(t.new_empty(t.shape) for t in (x, r_pre, i_pre, a_param, g_last))


def _rg_lru_setup(ctx, inputs, output):
    x, r_pre, i_pre, a_param, c, h0, backend = inputs
    ctx.save_for_backward(x, r_pre, i_pre, a_param, h0, output[0])
    ctx.c, ctx.backend = c, backend


def _rg_lru_backward(ctx, g, g_last):
    x, r_pre, i_pre, a_param, h0, h = ctx.saved_tensors
    if g is None:
        g = torch.zeros_like(h)
    if g_last is None:
        g_last = h.new_zeros((h.shape[0], h.shape[2]), dtype=acc_dtype(x, r_pre, i_pre))
    dx, dr, di, dap, dh0 = _rg_lru_bwd_op(x, r_pre, i_pre, a_param, ctx.c, h0, h, g, g_last, ctx.backend)
    return dx, dr, di, dap, None, (None if h0 is None else dh0.to(h0.dtype)), None


_rg_lru_op.register_autograd(_rg_lru_backward, setup_context=_rg_lru_setup)


def rg_lru(x, r_pre, i_pre, a_param, c=8.0, h0=None, *, backend: str):
    _check("rg_lru", x, r_pre, h0)
    _check("rg_lru", x, i_pre, h0)
    if a_param.shape != (x.shape[2],):
        raise ValueError(f"rg_lru: a_param must be (channels,) = ({x.shape[2]},), got {tuple(a_param.shape)}")
    if backend == "naive":
        return naive.rg_lru(x, r_pre, i_pre, a_param, c, h0)
    return _rg_lru_op(x, r_pre, i_pre, a_param, float(c), h0, backend)
