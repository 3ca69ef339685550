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

import functools
import math

import torch

from . import cpu_kernel


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


def linear_scan_into(a, x, h0, out, reverse=False):
    """out_t = a_t * out_{t-1} + x_t (reverse: out_t = a_t * out_{t+1} + x_t).

    h0 is the state before the first processed step (None: zeros). Returns the
    state after the last processed step as a new (B, D) tensor. On CPU the
    compiled kernel (cpu_kernel.py) runs instead when it is built and usable.
    """
    if cpu_kernel.usable(a, x, h0, out):
        return cpu_kernel.linear_scan_into(a, x, h0, out, reverse)
    bsz, length, dim = x.shape
    if length == 0:
        return torch.zeros(bsz, dim, dtype=out.dtype, device=out.device) if h0 is None else h0.clone()
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
            torch.addcmul(xm[:, :, k], am[:, :, k], s, out=s)
        p = am.prod(2)
        # carry: the state entering each chunk, written in place
        carries = torch.empty(bsz, n, dim, dtype=out.dtype, device=out.device)
        chunks = list(_steps(n, reverse))
        if h0 is None:
            carries[:, chunks[0]].zero_()
        else:
            carries[:, chunks[0]] = h0
        for j, nxt in zip(chunks, chunks[1:]):
            torch.addcmul(s[:, j], p[:, j], carries[:, j], out=carries[:, nxt])
        entering = carries
    else:
        entering = None if h0 is None else h0.unsqueeze(1)

    # pass 2: rerun every chunk from its entering state
    if entering is None:
        om[:, :, first] = xm[:, :, first]
    else:
        torch.addcmul(xm[:, :, first], am[:, :, first], entering, out=om[:, :, first])
    prev = first
    for k in rest:
        torch.addcmul(xm[:, :, k], am[:, :, k], om[:, :, prev], out=om[:, :, k])
        prev = k

    # tail: plain steps continuing from the last chunk's state
    state = om[:, 0 if reverse else -1, prev]
    for k in _steps(at.shape[1], reverse):
        torch.addcmul(xt[:, k], at[:, k], state, out=ot[:, k])
        state = ot[:, k]
    return state.clone()


def log_linear_scan_into(log_a, log_x, log_h0, out, reverse=False):
    """Same chunking in log space: out_t = logaddexp(log_a_t + out_{t-1}, log_x_t).

    Only sums and logaddexp are used, so no cumulative log-decay ever grows
    large enough to cancel catastrophically (Heinsen's cumsum form does).
    """
    if cpu_kernel.usable(log_a, log_x, log_h0, out):
        return cpu_kernel.log_linear_scan_into(log_a, log_x, log_h0, out, reverse)
    bsz, length, dim = log_x.shape
    if length == 0:
        if log_h0 is None:
            return torch.full((bsz, dim), -math.inf, dtype=out.dtype, device=out.device)
        return log_h0.clone()
    c = chunk_size(length)
    n = length // c
    am, at = _split(log_a, n, c, reverse)
    xm, xt = _split(log_x, n, c, reverse)
    om, ot = _split(out, n, c, reverse)
    order = list(_steps(c, reverse))
    first, rest = order[0], order[1:]

    def step(la, lx, prev, dst):  # dst may be prev; no temporaries
        torch.logaddexp(torch.add(la, prev, out=dst), lx, out=dst)

    if n > 1:
        s = xm[:, :, first].clone()
        for k in rest:
            step(am[:, :, k], xm[:, :, k], s, s)
        p = am.sum(2)
        carries = torch.empty(bsz, n, dim, dtype=out.dtype, device=out.device)
        chunks = list(_steps(n, reverse))
        if log_h0 is None:
            carries[:, chunks[0]] = -math.inf
        else:
            carries[:, chunks[0]] = log_h0
        for j, nxt in zip(chunks, chunks[1:]):
            step(p[:, j], s[:, j], carries[:, j], carries[:, nxt])
        entering = carries
    else:
        entering = None if log_h0 is None else log_h0.unsqueeze(1)

    if entering is None:
        om[:, :, first] = xm[:, :, first]
    else:
        step(am[:, :, first], xm[:, :, first], entering, om[:, :, first])
    prev = first
    for k in rest:
        step(am[:, :, k], xm[:, :, k], om[:, :, prev], om[:, :, k])
        prev = k

    state = om[:, 0 if reverse else -1, prev]
    for k in _steps(at.shape[1], reverse):
        step(at[:, k], xt[:, k], state, ot[:, k])
        state = ot[:, k]
    return state.clone()


# ---- backend entry points (dtype handling around the cores above) ----------


def acc_dtype(*ts) -> torch.dtype:
    """States accumulate in float32, or float64 when an input is float64."""
    return functools.reduce(torch.promote_types, [t.dtype for t in ts], torch.float32)


def linear_scan_fwd(a, x, h0):
    acc = acc_dtype(a, x)
    h = torch.empty(x.shape, dtype=acc, device=x.device)
    h0 = None if h0 is None else h0.to(acc)
    h_last = linear_scan_into(a.to(acc), x.to(acc), h0, h)
    return h.to(x.dtype), h_last


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


def log_linear_scan_fwd(log_a, log_x, log_h0):
    acc = acc_dtype(log_a, log_x)
    y = torch.empty(log_x.shape, dtype=acc, device=log_x.device)
    log_h0 = None if log_h0 is None else log_h0.to(acc)
    y_last = log_linear_scan_into(log_a.to(acc), log_x.to(acc), log_h0, y)
    return y.to(log_x.dtype), y_last


# ---- fused RG-LRU: gates computed in a few in-place passes --------------------
# Autograd through the gate formulas would allocate ~15 full (B, T, D) tensors;
# these two functions use 3 (forward) and 8 (backward), recomputing the gates.
# On CPU the compiled kernel (cpu_rg_lru_src.py) does both in one pass each instead.


def _rg_lru_decay(r_pre, a_param, c, acc):
    """(r, log a) with log a = -c r softplus(-a_param)."""
    r = torch.sigmoid(r_pre.to(acc))
    return r, r * (-c * torch.nn.functional.softplus(-a_param.to(acc)))


def _channels_contiguous(acc, *ts):
    """The tensors in dtype acc with unit channel stride (copies only where needed)."""
    out = []
    for t in ts:
        t = None if t is None else t.to(acc)
        out.append(t if t is None or t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous())
    return out


def rg_lru_fwd(x, r_pre, i_pre, a_param, c, h0):
    acc = acc_dtype(x, r_pre, i_pre)
    if x.device.type == "cpu":  # the fused compiled kernel: one pass, gates never stored
        xk, rk, ik, h0k = _channels_contiguous(acc, x, r_pre, i_pre, h0)
        if cpu_kernel.usable(xk, rk, ik, h0k):
            h, h_last = cpu_kernel.rg_lru_fwd(xk, rk, ik, a_param, c, h0k)
            return h.to(x.dtype), h_last
    _, log_a = _rg_lru_decay(r_pre, a_param, c, acc)
    u = torch.mul(log_a, 2).expm1_().neg_()  # 1 - a^2, no cancellation near a = 1
    u.clamp_min_(torch.finfo(acc).tiny).sqrt_()  # clamp: r == 0 exactly gives a == 1
    u.mul_(torch.sigmoid(i_pre.to(acc))).mul_(x)  # u = sqrt(1 - a^2) * i * x
    h = torch.empty(x.shape, dtype=acc, device=x.device)
    h_last = linear_scan_into(log_a.exp_(), u, None if h0 is None else h0.to(acc), h)
    return h.to(x.dtype), h_last


def rg_lru_bwd(x, r_pre, i_pre, a_param, c, h0, h, g, g_last):
    """Returns (dx, dr_pre, di_pre, da_param, dh0) in the accumulation dtype."""
    acc = acc_dtype(x, r_pre, i_pre)
    if x.device.type == "cpu":
        xk, rk, ik, h0k, gk = _channels_contiguous(acc, x, r_pre, i_pre, h0, g)
        if cpu_kernel.usable(xk, rk, ik, h0k, gk):
            return cpu_kernel.rg_lru_bwd(xk, rk, ik, a_param, c, h0k, h.to(acc).contiguous(), gk,
                                         g_last.to(acc))
    tiny = torch.finfo(acc).tiny
    r, q = _rg_lru_decay(r_pre, a_param, c, acc)
    a = torch.exp(q)
    w = reverse_scan(a, g, g_last)  # dL/dh_t, total
    dh0 = w[:, 0] * a[:, 0] if h0 is not None else torch.zeros_like(w[:, 0])

    # d log a, direct part: dL/da_t * a_t with dL/da_t = w_t h_{t-1}
    d_log_a = torch.empty_like(w)
    torch.mul(w[:, 1:], h[:, :-1], out=d_log_a[:, 1:])
    if h0 is None:
        d_log_a[:, 0].zero_()
    else:
        torch.mul(w[:, 0], h0, out=d_log_a[:, 0])
    d_log_a.mul_(a)

    q.mul_(2).expm1_().neg_()  # q = 1 - a^2
    inside = q > tiny
    scale = q.clamp_min_(tiny).sqrt_()
    i = torch.sigmoid(i_pre.to(acc))
    dx = torch.mul(w, scale).mul_(i)
    d_scale = w.mul_(i).mul_(x)  # reuses w's buffer
    di_pre = torch.mul(d_scale, scale).mul_(i.neg_().add_(1))  # w scale x i (1 - i): sigmoid'
    # d log a, through scale = sqrt(1 - a^2): d scale / d log a = -a^2 / scale
    a.mul_(a).div_(scale).mul_(d_scale).neg_().masked_fill_(~inside, 0)
    d_log_a.add_(a)

    # log a = -c r softplus(-a_param): d/da_param = c r sigmoid(-a_param)
    d_log_a.mul_(r)
    d_a_param = d_log_a.sum((0, 1)) * c * torch.sigmoid(-a_param.to(acc))
    sp = torch.nn.functional.softplus(-a_param.to(acc))
    dr_pre = d_log_a.mul_(-c * sp).mul_(r.neg_().add_(1))  # sigmoid' = r (1 - r)
    return dx, dr_pre, di_pre, d_a_param, dh0
