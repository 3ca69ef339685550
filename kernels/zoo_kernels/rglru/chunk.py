"""The fused RG-LRU's torch backend: the compiled CPU kernel (cpu.py) where it applies, else the
gates computed in a few in-place passes around the chunked linear scan (zoo_kernels.scan.chunk)."""

from __future__ import annotations

import torch

from .. import cbuild
from .._tensors import acc_dtype, channels_contiguous
from ..scan.chunk import linear_scan_into, reverse_scan
from . import cpu

# ---- fused RG-LRU: gates computed in a few in-place passes --------------------
# Autograd through the gate formulas would allocate ~15 full (B, T, D) tensors;
# these two functions use 3 (forward) and 8 (backward), recomputing the gates.
# On CPU the compiled kernel (rg_lru.c, cpu.py) does both in one pass each instead.


def _rg_lru_decay(r_pre, a_param, c, acc):
    """(r, log a) with log a = -c r softplus(-a_param)."""
    r = torch.sigmoid(r_pre.to(acc))
    return r, r * (-c * torch.nn.functional.softplus(-a_param.to(acc)))


def rg_lru_fwd(x, r_pre, i_pre, a_param, c, h0, resets=None):
    acc = acc_dtype(x, r_pre, i_pre)
    if x.device.type == "cpu":  # the fused compiled kernel: one pass, gates never stored
        xk, rk, ik, h0k = channels_contiguous(x, r_pre, i_pre, h0, dtype=acc)
        if cbuild.usable(xk, rk, ik, h0k):
            h, h_last = cpu.rg_lru_fwd(xk, rk, ik, a_param, c, h0k, resets)
            return h.to(x.dtype), h_last
    _, log_a = _rg_lru_decay(r_pre, a_param, c, acc)
    u = torch.mul(log_a, 2).expm1_().neg_()  # 1 - a^2, no cancellation near a = 1
    u.clamp_min_(torch.finfo(acc).tiny).sqrt_()  # clamp: r == 0 exactly gives a == 1
    a = log_a.exp_()
    if resets is not None:  # a document starts: a = 0, normaliser 1
        z = resets[..., None]
        u.masked_fill_(z, 1.0)
        a.masked_fill_(z, 0.0)
    u.mul_(torch.sigmoid(i_pre.to(acc))).mul_(x)  # u = sqrt(1 - a^2) * i * x
    h = torch.empty(x.shape, dtype=acc, device=x.device)
    h_last = linear_scan_into(a, u, None if h0 is None else h0.to(acc), h)
    return h.to(x.dtype), h_last


def rg_lru_bwd(x, r_pre, i_pre, a_param, c, h0, h, g, g_last, resets=None):
    """Returns (dx, dr_pre, di_pre, da_param, dh0) in the accumulation dtype."""
    acc = acc_dtype(x, r_pre, i_pre)
    if x.device.type == "cpu":
        xk, rk, ik, h0k, gk = channels_contiguous(x, r_pre, i_pre, h0, g, dtype=acc)
        if cbuild.usable(xk, rk, ik, h0k, gk):
            hk, glk = h.to(acc).contiguous(), g_last.to(acc)
            return cpu.rg_lru_bwd(xk, rk, ik, a_param, c, h0k, hk, gk, glk, resets)
    tiny = torch.finfo(acc).tiny
    r, q = _rg_lru_decay(r_pre, a_param, c, acc)
    a = torch.exp(q)
    z = None if resets is None else resets[..., None]
    if z is not None:  # a = 0 at a start: w stops there, and d log a (direct part) is 0
        a.masked_fill_(z, 0.0)
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
    if z is not None:  # the normaliser is 1 at a start: nothing flows into log a through it
        inside.masked_fill_(z, False)
        scale.masked_fill_(z, 1.0)
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
