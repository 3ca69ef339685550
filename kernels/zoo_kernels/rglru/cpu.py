"""The fused RG-LRU on CPU (rg_lru.c): one pass over time per (batch row, channel block), the
gates computed in registers and never stored; the backward runs time in reverse, recomputes
the gates and reads the saved states."""

from __future__ import annotations

import torch

from .. import cbuild

SIGNATURE = cbuild.Signature(
    "zoo_rg_lru",
    """
    int kind, ptr x, ptr rp, ptr ip, ptr rs, ptr n, ptr h0, ptr h, ptr g, ptr gl, ptr out, ptr last,
    ptr dx, ptr dr, ptr di, ptr dap, ptr dh0, i64* st, i64 B, i64 L, i64 D, i64 block, int threads""",
)
#: `kind` values: forward float32; backward float32 (+1: float64).
FORWARD, BACKWARD = 0, 2


def _rg_lru_call(kind, x, r_pre, i_pre, resets, n, h0, strides, **tensors):
    bsz, length, dim = x.shape
    st = tuple(s for t in strides for s in (t.stride(0), t.stride(1))) + (h0.stride(0),)
    ins = {"x": x, "rp": r_pre, "ip": i_pre, "rs": resets, "n": n, "h0": h0, "st": st, "B": bsz, "L": length, "D": dim}
    cbuild.call(SIGNATURE, kind, x, dim, "the fused RG-LRU", **ins, **tensors)


def _rg_lru_common(x, a_param, c, h0):
    n = torch.nn.functional.softplus(-a_param.to(x.dtype)).mul_(-c)  # log a = n r
    return n.contiguous(), (x.new_zeros(x.shape[0], x.shape[2]) if h0 is None else h0)


def rg_lru_fwd(x, r_pre, i_pre, a_param, c, h0, resets=None):
    """Fused RG-LRU forward on tensors that pass `cbuild.usable` (one dtype, channels contiguous).
    Returns (h, h_last)."""
    n, h0 = _rg_lru_common(x, a_param, c, h0)
    h, last = torch.empty(x.shape, dtype=x.dtype), x.new_empty(x.shape[0], x.shape[2])
    _rg_lru_call(FORWARD, x, r_pre, i_pre, resets, n, h0, (x, r_pre, i_pre, x), out=h, last=last)
    return h, last


def rg_lru_bwd(x, r_pre, i_pre, a_param, c, h0, h, g, g_last, resets=None):
    """Fused RG-LRU backward: recomputes the gates, reads the saved states h (contiguous).
    Returns (dx, dr_pre, di_pre, da_param, dh0); dh0 is zeros without h0."""
    n, h0z = _rg_lru_common(x, a_param, c, h0)
    dx, dr, di = (torch.empty(x.shape, dtype=x.dtype) for _ in range(3))
    dap, dh0 = x.new_empty(x.shape[0], x.shape[2]), x.new_empty(x.shape[0], x.shape[2])
    _rg_lru_call(
        BACKWARD,
        x,
        r_pre,
        i_pre,
        resets,
        n,
        h0z,
        (x, r_pre, i_pre, g),
        h=h,
        g=g,
        gl=g_last.contiguous(),
        dx=dx,
        dr=dr,
        di=di,
        dap=dap,
        dh0=dh0,
    )
    # dlog_a/da_param = c r sigmoid(-a_param); the kernel summed dq r over time per batch row
    d_a_param = dap.sum(0).mul_(torch.sigmoid(-a_param.to(x.dtype))).mul_(c)
    return dx, dr, di, d_a_param, (dh0 if h0 is not None else dh0.zero_())
