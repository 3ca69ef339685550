"""Linear recurrences over time, h_t = a_t h_{t-1} + x_t, and their log-space form.

One dispatch for both ops over the three backends (zoo_kernels.backends):
- `naive.py`: one step per token, the definition;
- `chunk.py`: chunked PyTorch (the torch backend), which runs the compiled C scan
  (`cpu.py`, `scan.c`) when it applies;
- `triton.py`: Triton kernels (the triton backend).
The torch and triton paths are custom ops (zoo_kernels._custom_op) with fake kernels and
a registered autograd; the backend name is a plain string argument, so one op serves both.
Tensors are (batch, time, channels); states accumulate in float32 (float64 for float64).

Documents: `resets` (batch, time) bool, True where a document starts (x_t is its first
token). There the gate is forced to zero (a_t = 0, log a_t = -inf): h_t = x_t, as if the
document ran alone from a zero state, and no gradient reaches a_t or anything before t. The
gate is masked once (one pass over a) before the scan, so every backend (naive, chunked,
compiled C, Triton) runs its own kernel on it unchanged; resets=None skips the pass.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import backends
from .._custom_op import define, grad_or_zeros
from .._tensors import acc_dtype
from . import chunk, naive


def _impl(backend: str):
    """The module with a backend's forward/backward primitives."""
    return chunk if backend == "torch" else backends.triton_module("scan.triton")


def check(name: str, first: Tensor, second: Tensor, init: Tensor | None) -> None:
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


def check_resets(name: str, x: Tensor, resets: Tensor | None) -> Tensor | None:
    """resets as a bool (batch, time) tensor on x's device, or None."""
    if resets is None:
        return None
    if tuple(resets.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{name}: resets must be (batch, time) = {tuple(x.shape[:2])}, got {tuple(resets.shape)}")
    return resets.to(device=x.device, dtype=torch.bool)


def _gate(name: str, a: Tensor, resets: Tensor | None, fill: float) -> Tensor:
    """a with the gate forced to `fill` (0, or -inf in log space) where a document starts."""
    resets = check_resets(name, a, resets)
    return a if resets is None else a.masked_fill(resets[..., None], fill)


def states_fake(x: Tensor, *inputs: Tensor) -> tuple[Tensor, Tensor]:
    """What a scan returns: states like x, and the last state (batch, channels) in the
    accumulation dtype of `inputs`."""
    return x.new_empty(x.shape), x.new_empty((x.shape[0], x.shape[2]), dtype=acc_dtype(*inputs))


def _scan_op(name: str, backward, setup):
    """The custom op zoo_kernels::<name>(a, x, h0, backend): the backend's `<name>_fwd`."""

    def impl(a: Tensor, x: Tensor, h0: Tensor | None, backend: str) -> tuple[Tensor, Tensor]:
        return getattr(_impl(backend), f"{name}_fwd")(a, x, h0)

    return define(name, impl, lambda a, x, h0, backend: states_fake(x, a, x), backward=backward, setup=setup)


def _scan(name: str, reference, fill: float, a, x, h0, resets, backend) -> tuple[Tensor, Tensor]:
    """A scan's public entry: checks, the gate forced to `fill` at document starts, then the
    naive `reference` or the op of the selected backend."""
    check(name, a, x, h0)
    a = _gate(name, a, resets, fill)
    backend = backends.select(x, backend)
    if backend == "naive":
        return reference(a, x, h0)
    return _OPS[name](a, x, h0, backend)


# ---- linear_scan --------------------------------------------------------------


def _linear_scan_bwd(
    a: Tensor, h: Tensor, h0: Tensor | None, g: Tensor, g_last: Tensor, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    da, dx, dh0 = _impl(backend).linear_scan_bwd(a, h, h0, g, g_last)
    return da.to(a.dtype), dx.to(h.dtype), dh0


_linear_scan_bwd_op = define(
    "linear_scan_backward",
    _linear_scan_bwd,
    lambda a, h, h0, g, g_last, backend: (a.new_empty(a.shape), h.new_empty(h.shape), g_last.new_empty(g_last.shape)),
)


def _linear_scan_setup(ctx, inputs, output):
    a, x, h0, backend = inputs
    ctx.save_for_backward(a, output[0], h0)
    ctx.backend = backend


def _linear_scan_backward(ctx, g, g_last):
    a, h, h0 = ctx.saved_tensors
    g = grad_or_zeros(g, h.shape, h)
    g_last = grad_or_zeros(g_last, (h.shape[0], h.shape[2]), h, acc_dtype(a, h))
    da, dx, dh0 = _linear_scan_bwd_op(a, h, h0, g, g_last, ctx.backend)
    return da, dx, (None if h0 is None else dh0.to(h0.dtype)), None


_linear_scan_op = _scan_op("linear_scan", _linear_scan_backward, _linear_scan_setup)


def linear_scan(
    a: Tensor, x: Tensor, h0: Tensor | None = None, *, resets: Tensor | None = None, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """h_t = a_t * h_{t-1} + x_t with h_0 = h0 (or zeros). Returns (h, h_last).

    resets: (batch, time) bool or None, True where a document starts (a_t taken as 0).
    backend: naive | torch | triton, by default the one zoo_kernels.backends picks for x."""
    return _scan("linear_scan", naive.linear_scan, 0.0, a, x, h0, resets, backend)


# ---- log_linear_scan -------------------------------------------------------------


def _reverse_scan(a: Tensor, g: Tensor, g_last: Tensor, backend: str) -> Tensor:
    return _impl(backend).reverse_scan(a, g, g_last)


_reverse_scan_op = define(
    "reverse_scan", _reverse_scan, lambda a, g, g_last, backend: g.new_empty(g.shape, dtype=acc_dtype(a, g))
)


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
    g = grad_or_zeros(g, y.shape, y)
    g_last = grad_or_zeros(g_last, y[:, 0].shape, y)
    w = _reverse_scan_op(r, g, g_last, ctx.backend)
    d_log_h0 = None if log_h0 is None else (w[:, 0] * r[:, 0]).to(log_h0.dtype)
    d_log_a = r.mul_(w).to(log_a.dtype)
    d_log_x = torch.sub(log_x, y_sub, out=y_sub).exp_().mul_(w).to(log_x.dtype)
    return d_log_a, d_log_x, d_log_h0, None


_log_linear_scan_op = _scan_op("log_linear_scan", _log_backward, _log_setup)
_OPS = {"linear_scan": _linear_scan_op, "log_linear_scan": _log_linear_scan_op}


def log_linear_scan(
    log_a: Tensor,
    log_x: Tensor,
    log_h0: Tensor | None = None,
    *,
    resets: Tensor | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """log_h_t = log(exp(log_a_t) * h_{t-1} + exp(log_x_t)); log_h0=None means h_0 = 0.

    Heinsen's log-space scan (arXiv 2311.06281) for positive states, as used by
    minGRU/minLSTM. Returns (log_h, log_h_last). resets: as for linear_scan (log_a_t taken
    as -inf: log_h_t = log_x_t). backend: as for linear_scan.
    """
    return _scan("log_linear_scan", naive.log_linear_scan, -math.inf, log_a, log_x, log_h0, resets, backend)
