"""The fused RG-LRU as Triton kernels (the triton backend of zoo_kernels.rglru).

The scan's tiling (zoo_kernels/scan/triton.py): one program owns one batch row and BLOCK_D
channels and walks time in tiles of BLOCK_T steps, with the gates computed in registers.
Document starts (RS, uint8 (B, T), when HAS_RS) set a = 0 and the normaliser to 1 there.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._tensors import acc_dtype
from ..backends import check_triton_device
from ..scan.triton import _launch, _lin_tile


@triton.jit
def _log1p(u):
    # log(1 + u) accurate for tiny u (Goldberg's trick; tl has no log1p)
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))


@triton.jit
def _softplus_neg(v):
    """softplus(-v) = log(1 + exp(-v)), accurate when it is tiny (v >> 0)."""
    return tl.maximum(-v, 0.0) + _log1p(tl.exp(-tl.abs(v)))


@triton.jit
def _neg_expm1(z):
    """-expm1(z) = 1 - exp(z) for z <= 0, without cancellation near 0."""
    series = -z * (1.0 + z / 2.0 * (1.0 + z / 3.0 * (1.0 + z / 4.0 * (1.0 + z / 5.0))))
    return tl.where(z > -0.1, series, 1.0 - tl.exp(z))


@triton.jit
def _rg_lru_decay(rp, sp, c):
    """(r, log a, a) from the recurrence-gate pre-activation and softplus(-a_param)."""
    r = tl.sigmoid(rp)
    log_a = -c * r * sp[None, :]
    return r, log_a, tl.exp(log_a)


# ---- fused RG-LRU -------------------------------------------------------------------------


@triton.jit
def _program(AP, H0, D, HAS_H0: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """This program's batch row b, channels d and their mask, a tile's rows, softplus(-a_param)
    on d, and the initial state (zeros without H0)."""
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    sp = _softplus_neg(tl.load(AP + d, mask=dmask, other=0.0).to(tl.float32))
    if HAS_H0:
        h0 = tl.load(H0 + b * D + d, mask=dmask, other=0.0).to(tl.float32)
    else:
        h0 = tl.zeros((BD,), tl.float32)
    return b, d, dmask, tl.arange(0, BT), sp, h0


@triton.jit
def _starts(RS, b, t, T):
    """(BT, 1) True where a document starts at step t (False past the ends)."""
    z = tl.load(RS + b * T + t, mask=(t >= 0) & (t < T), other=0) != 0
    return z[:, None]


@triton.jit
def _rg_lru_fwd_kernel(
    X,
    RP,
    IP,
    AP,
    RS,
    H0,
    H,
    HLAST,
    T,
    D,
    c,
    sb,
    st,
    sd,
    HAS_H0: tl.constexpr,
    HAS_RS: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
):
    """Gates computed in registers: reads x, r_pre, i_pre once, writes h once."""
    b, d, dmask, rows, sp, carry = _program(AP, H0, D, HAS_H0, BT, BD)
    for start in range(0, T, BT):
        t = start + rows
        m = (t < T)[:, None] & dmask[None, :]
        off = b * sb + t[:, None] * st + d[None, :] * sd
        x = tl.load(X + off, mask=m, other=0.0).to(tl.float32)
        rp = tl.load(RP + off, mask=m, other=0.0).to(tl.float32)
        ip = tl.load(IP + off, mask=m, other=0.0).to(tl.float32)
        _, log_a, a = _rg_lru_decay(rp, sp, c)
        a = tl.where(m, a, 1.0)
        scale = tl.sqrt(tl.maximum(_neg_expm1(2.0 * log_a), 1.1754943508222875e-38))
        if HAS_RS:  # a document starts: a = 0, normaliser 1 (RecurrentGemma)
            z = _starts(RS, b, t, T)
            a = tl.where(z, 0.0, a)
            scale = tl.where(z, 1.0, scale)
        u = scale * tl.sigmoid(ip) * x  # zero on padding since x = 0 there
        h, carry = _lin_tile(a, u, carry, rows, BT)
        tl.store(H + off, h.to(H.dtype.element_ty), mask=m)
    tl.store(HLAST + b * D + d, carry.to(HLAST.dtype.element_ty), mask=dmask)


@triton.jit
def _rg_lru_bwd_kernel(
    X,
    RP,
    IP,
    AP,
    RS,
    H0,
    H,
    G,
    GLAST,
    DX,
    DRP,
    DIP,
    DAP,
    W0,
    T,
    D,
    c,
    sb,
    st,
    sd,
    shb,
    sht,
    shd,
    sgb,
    sgt,
    sgd,
    HAS_H0: tl.constexpr,
    HAS_RS: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
):
    """Reverse scan for w = dL/dh, then every gate gradient in the same pass.

    DX, DRP, DIP are contiguous (B, T, D); DAP gets per-batch-row partial sums
    of dL/dlog_a * c * r, which the host reduces and multiplies by sigmoid(-a_param).
    """
    b, d, dmask, rows, sp, h0 = _program(AP, H0, D, HAS_H0, BT, BD)
    carry = tl.load(GLAST + b * D + d, mask=dmask, other=0.0).to(tl.float32)
    dap = tl.zeros((BD,), tl.float32)
    for start in range(0, T, BT):
        t = T - 1 - start - rows
        m = (t >= 0)[:, None] & dmask[None, :]
        off = b * sb + t[:, None] * st + d[None, :] * sd
        rp_next = tl.load(RP + off + st, mask=m & (t + 1 < T)[:, None], other=0.0).to(tl.float32)
        _, _, a_next = _rg_lru_decay(rp_next, sp, c)
        a_next = tl.where(m & (t + 1 < T)[:, None], a_next, 1.0)
        if HAS_RS:
            a_next = tl.where(_starts(RS, b, t + 1, T), 0.0, a_next)
        g = tl.load(G + b * sgb + t[:, None] * sgt + d[None, :] * sgd, mask=m, other=0.0).to(tl.float32)
        w, carry = _lin_tile(a_next, g, carry, rows, BT)

        # recompute this step's gates and take every local derivative
        x = tl.load(X + off, mask=m, other=0.0).to(tl.float32)
        rp = tl.load(RP + off, mask=m, other=0.0).to(tl.float32)
        ip = tl.load(IP + off, mask=m, other=0.0).to(tl.float32)
        r, log_a, a = _rg_lru_decay(rp, sp, c)
        i = tl.sigmoid(ip)
        q = _neg_expm1(2.0 * log_a)  # 1 - a^2
        q_ok = q > 1.1754943508222875e-38
        scale = tl.sqrt(tl.maximum(q, 1.1754943508222875e-38))
        if HAS_RS:  # a = 0, normaliser 1: nothing flows into log a at a start
            z = _starts(RS, b, t, T)
            a = tl.where(z, 0.0, a)
            q_ok = q_ok & (z == 0)
            scale = tl.where(z, 1.0, scale)
        h_prev = tl.load(
            H + b * shb + (t - 1)[:, None] * sht + d[None, :] * shd, mask=m & (t >= 1)[:, None], other=0.0
        ).to(tl.float32)
        h_prev = tl.where((t == 0)[:, None], h0[None, :], h_prev)
        d_scale = w * i * x
        d_log_a = w * h_prev * a + tl.where(q_ok, d_scale / (2.0 * scale), 0.0) * (-2.0 * a * a)
        d_log_a = tl.where(m, d_log_a, 0.0)
        tl.store(DX + off, w * scale * i, mask=m)
        tl.store(DIP + off, w * scale * x * i * (1.0 - i), mask=m)
        tl.store(DRP + off, d_log_a * (-c * sp[None, :]) * r * (1.0 - r), mask=m)
        dap += tl.sum(d_log_a * c * r, axis=0)
    tl.store(DAP + b * D + d, dap, mask=dmask)
    tl.store(W0 + b * D + d, carry.to(W0.dtype.element_ty), mask=dmask)


# ---- host wrappers -----------------------------------------------------------------------


def _run(kernel, x, r_pre, i_pre, a_param, c, h0, resets, spare, tensors, strides):
    """Launch an RG-LRU kernel: the inputs (x, r_pre, i_pre, a_param, the starts as uint8 and
    h0, `spare` standing in, unread, for an absent one), then `tensors`, the sizes, c and
    `strides`."""
    bsz, length, dim = x.shape
    rs = spare if resets is None else resets.to(torch.uint8).contiguous()
    h0c = spare if h0 is None else h0.contiguous()
    inputs = (x, r_pre, i_pre, a_param.contiguous(), rs, h0c)
    flags = {"HAS_H0": h0 is not None, "HAS_RS": resets is not None}
    _launch(kernel, bsz, length, dim, *inputs, *tensors, length, dim, float(c), *strides, **flags)


def rg_lru_fwd(x, r_pre, i_pre, a_param, c, h0, resets=None):
    check_triton_device(x)
    x, r_pre, i_pre = x.contiguous(), r_pre.contiguous(), i_pre.contiguous()
    bsz, length, dim = x.shape
    h = torch.empty_like(x)
    h_last = torch.empty((bsz, dim), dtype=acc_dtype(x, r_pre, i_pre), device=x.device)
    _run(_rg_lru_fwd_kernel, x, r_pre, i_pre, a_param, c, h0, resets, h_last, (h, h_last), x.stride())
    return h, h_last


def rg_lru_bwd(x, r_pre, i_pre, a_param, c, h0, h, g, g_last, resets=None):
    """Returns (dx, dr_pre, di_pre, da_param, dh0); the caller casts them."""
    x, r_pre, i_pre = x.contiguous(), r_pre.contiguous(), i_pre.contiguous()
    bsz, length, dim = x.shape
    dx = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    drp, dip = torch.empty_like(dx), torch.empty_like(dx)
    dap = torch.empty((bsz, dim), dtype=torch.float32, device=x.device)
    w0 = torch.empty_like(dap)
    g_last = g_last.float().contiguous()
    outs = (h, g, g_last, dx, drp, dip, dap, w0)
    _run(_rg_lru_bwd_kernel, x, r_pre, i_pre, a_param, c, h0, resets, w0, outs, (*x.stride(), *h.stride(), *g.stride()))
    ap = a_param.float()
    d_a_param = dap.sum(0) * torch.sigmoid(-ap)
    if h0 is not None:
        a0 = torch.exp(-c * torch.sigmoid(r_pre[:, 0].float()) * torch.nn.functional.softplus(-ap))
        dh0 = w0 * (a0 if resets is None else a0.masked_fill(resets[:, :1], 0.0))
    else:
        dh0 = torch.zeros_like(w0)
    return dx, drp, dip, d_a_param, dh0
