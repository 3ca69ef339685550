"""Chunked PyTorch scans: the fast CPU path.

The time axis is cut into N chunks of C steps (plus a tail of R < C steps).
  pass 1: the state each chunk ends in when it starts from zero, for all chunks
          at once (C steps, each on a (B, N, D) slice), and each chunk's total decay;
  carry:  the state entering each chunk, a short sequential pass over N chunks;
  pass 2: rerun each chunk from its true entering state, writing the output.
So there are about 2C + N Python-level steps instead of T, every step works on
N times more data, and nothing is ever divided by a cumulative product (decays
near 0 underflow harmlessly to 0 instead of producing inf/NaN).

All functions here work on tensors already in the compute dtype (float32 or
float64) with any strides; `out` receives the states and may not alias inputs.
"""

from __future__ import annotations

import math

import torch

from .. import cbuild
from .._tensors import acc_dtype
from . import cpu


def chunk_size(length: int) -> int:
    """About sqrt(T/2) minimises 2C + T/C Python steps; small T runs unchunked."""
    if length < 64:
        return length  # one chunk: pass 1 is skipped, pass 2 is a plain loop
    return max(16, min(128, int(math.sqrt(length / 2))))


def _split(t: torch.Tensor, n: int, c: int, reverse: bool):
    """(B, L, D) -> chunked main part (B, n, c, D) and tail (B, R, D).

    Forward scans have their tail at the end; reverse scans start at the end,
    so their chunks are the last n*c steps and the tail is at the front.
    """
    length = t.shape[1]
    r = length - n * c
    if reverse:
        return t[:, r:].unflatten(1, (n, c)), t[:, :r]
    return t[:, : n * c].unflatten(1, (n, c)), t[:, n * c :]


def _steps(n: int, reverse: bool):
    return range(n - 1, -1, -1) if reverse else range(n)


def _linear_step(a, x, prev, dst):  # dst = a prev + x; dst may be prev
    torch.addcmul(x, a, prev, out=dst)


def _log_step(la, lx, prev, dst):  # dst = logaddexp(la + prev, lx); dst may be prev, no temporaries
    torch.logaddexp(torch.add(la, prev, out=dst), lx, out=dst)


def _scan_into(a, x, h0, out, reverse, step, total, zero):
    """The chunked scan out_t = step(a_t, x_t, out_{t-1}), with `total` folding a chunk's decays
    (over dim 2) and `zero` the state before the first step when h0 is None."""
    bsz, length, dim = x.shape
    if length == 0:
        return torch.full((bsz, dim), zero, dtype=out.dtype, device=out.device) if h0 is None else h0.clone()
    c = chunk_size(length)
    n = length // c
    am, at = _split(a, n, c, reverse)
    xm, xt = _split(x, n, c, reverse)
    om, ot = _split(out, n, c, reverse)
    order = list(_steps(c, reverse))
    first, rest = order[0], order[1:]

    if n > 1:
        # pass 1: zero-start end state s and total decay p of every chunk
        s = xm[:, :, first].clone()
        for k in rest:
            step(am[:, :, k], xm[:, :, k], s, s)
        p = total(am)
        # carry: the state entering each chunk, written in place
        carries = torch.empty(bsz, n, dim, dtype=out.dtype, device=out.device)
        chunks = list(_steps(n, reverse))
        if h0 is None:
            carries[:, chunks[0]] = zero
        else:
            carries[:, chunks[0]] = h0
        for j, nxt in zip(chunks, chunks[1:]):
            step(p[:, j], s[:, j], carries[:, j], carries[:, nxt])
        entering = carries
    else:
        entering = None if h0 is None else h0.unsqueeze(1)

    # pass 2: rerun every chunk from its entering state
    if entering is None:
        om[:, :, first] = xm[:, :, first]
    else:
        step(am[:, :, first], xm[:, :, first], entering, om[:, :, first])
    prev = first
    for k in rest:
        step(am[:, :, k], xm[:, :, k], om[:, :, prev], om[:, :, k])
        prev = k

    # tail: plain steps continuing from the last chunk's state
    state = om[:, 0 if reverse else -1, prev]
    for k in _steps(at.shape[1], reverse):
        step(at[:, k], xt[:, k], state, ot[:, k])
        state = ot[:, k]
    return state.clone()


def linear_scan_into(a, x, h0, out, reverse=False):
    """out_t = a_t * out_{t-1} + x_t (reverse: out_t = a_t * out_{t+1} + x_t).

    h0 is the state before the first processed step (None: zeros). Returns the
    state after the last processed step as a new (B, D) tensor. On CPU the
    compiled kernel (cpu.py) runs instead when it is built and usable.
    """
    if cbuild.usable(a, x, h0, out):
        return cpu.linear_scan_into(a, x, h0, out, reverse)
    return _scan_into(a, x, h0, out, reverse, _linear_step, lambda am: am.prod(2), 0.0)


def log_linear_scan_into(log_a, log_x, log_h0, out, reverse=False):
    """Same chunking in log space: out_t = logaddexp(log_a_t + out_{t-1}, log_x_t).

    Only sums and logaddexp are used, so no cumulative log-decay ever grows
    large enough to cancel catastrophically (Heinsen's cumsum form does).
    """
    if cbuild.usable(log_a, log_x, log_h0, out):
        return cpu.log_linear_scan_into(log_a, log_x, log_h0, out, reverse)
    return _scan_into(log_a, log_x, log_h0, out, reverse, _log_step, lambda am: am.sum(2), -math.inf)


# ---- the torch backend of zoo_kernels.scan (dtype handling around the cores above) ----


def _fwd(into, a, x, h0):
    """A forward scan in the accumulation dtype: (states in x's dtype, last state)."""
    acc = acc_dtype(a, x)
    h = torch.empty(x.shape, dtype=acc, device=x.device)
    h0 = None if h0 is None else h0.to(acc)
    h_last = into(a.to(acc), x.to(acc), h0, h)
    return h.to(x.dtype), h_last


def linear_scan_fwd(a, x, h0):
    return _fwd(linear_scan_into, a, x, h0)


def log_linear_scan_fwd(log_a, log_x, log_h0):
    return _fwd(log_linear_scan_into, log_a, log_x, log_h0)


def reverse_scan(a, g, g_last):
    """w_t = g_t + a_{t+1} w_{t+1} with w_{T-1} = g_{T-1} + g_last (the backward scan)."""
    acc = acc_dtype(a, g)
    w = torch.empty(g.shape, dtype=acc, device=g.device)
    torch.add(g[:, -1], g_last, out=w[:, -1])
    linear_scan_into(a[:, 1:].to(acc), g[:, :-1].to(acc), w[:, -1], w[:, :-1], reverse=True)
    return w


def linear_scan_bwd(a, h, h0, g, g_last):
    """Returns (da, dx, dh0) in the accumulation dtype; dh0 is zeros without h0."""
    dx = reverse_scan(a, g, g_last)
    da = torch.empty_like(dx)
    torch.mul(dx[:, 1:], h[:, :-1], out=da[:, 1:])  # da_t = dx_t * h_{t-1}
    if h0 is None:
        da[:, 0].zero_()
        dh0 = torch.zeros_like(dx[:, 0])
    else:
        torch.mul(dx[:, 0], h0, out=da[:, 0])
        dh0 = dx[:, 0] * a[:, 0]
    return da, dx, dh0
