"""Triton kernels: the GPU path. Imported only when the triton backend is used.

One program owns one batch row and BLOCK_D channels and walks the time axis in
tiles of BLOCK_T steps: each tile is scanned in registers with
tl.associative_scan, the state entering the tile is folded into its first step,
and the tile's last state is carried to the next tile. All arithmetic is fp32
(fp64 inputs are also computed in fp32 here); inputs may be bf16/fp16/fp32 with
any strides. Backward passes are the same scan run from the end of time.

Block sizes were picked on an H100 with benchmarks/kernels/tune_triton.py: the
linear-scan forward moves 90% of the copy bandwidth at (8, 65536, 1536) fp32, within
2% of the best of the sweep (benchmarks/results/kernels-gpu-h100.md).
Under TRITON_INTERPRET=1 the kernels also run on CPU tensors (slowly), which is
how the tests exercise them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._tensors import acc_dtype
from ..backends import check_triton_device

BLOCK_T = 128  # time steps per tile
BLOCK_D = 32  # channels per program (32 fp32 = one 128-byte row segment)
NUM_WARPS = 4
NUM_STAGES = 3  # software-pipelining depth of the time loop (Triton's default on CUDA)


def _blocks(length: int, dim: int) -> tuple[int, int]:
    bt = min(BLOCK_T, max(16, triton.next_power_of_2(length)))
    bd = min(BLOCK_D, max(16, triton.next_power_of_2(dim)))
    return bt, bd


# ---- shared device helpers ----------------------------------------------------


@triton.jit
def _lin_combine(a1, x1, a2, x2):
    # apply (a1, x1) then (a2, x2): h -> a2 (a1 h + x1) + x2
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _logaddexp(p, q):
    m = tl.maximum(p, q)
    m = tl.where(m == float("-inf"), 0.0, m)  # both -inf: exp(-inf) = 0, log 0 = -inf
    return m + tl.log(tl.exp(p - m) + tl.exp(q - m))


@triton.jit
def _log_combine(la1, lx1, la2, lx2):
    return la1 + la2, _logaddexp(lx1 + la2, lx2)


@triton.jit
def _last_row(tile, rows, BT: tl.constexpr):
    return tl.sum(tl.where(rows[:, None] == BT - 1, tile, 0.0), axis=0)


@triton.jit
def _lin_tile(a, x, carry, rows, BT: tl.constexpr):
    """One tile of h_t = a_t h_{t-1} + x_t entered with the state `carry` (folded into its
    first step): (h, its last row: the next tile's carry)."""
    x = tl.where(rows[:, None] == 0, x + a * carry[None, :], x)
    _, h = tl.associative_scan((a, x), 0, _lin_combine)
    return h, _last_row(h, rows, BT)


# ---- forward scans ---------------------------------------------------------------


@triton.jit
def _scan_fwd_kernel(
    A,
    X,
    H0,
    H,
    HLAST,
    T,
    D,
    sab,
    sat,
    sad,
    sxb,
    sxt,
    sxd,
    shb,
    sht,
    shd,
    HAS_H0: tl.constexpr,
    LOG: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    rows = tl.arange(0, BT)
    if HAS_H0:
        carry = tl.load(H0 + b * D + d, mask=dmask, other=0.0).to(tl.float32)
    elif LOG:
        carry = tl.full((BD,), float("-inf"), tl.float32)
    else:
        carry = tl.zeros((BD,), tl.float32)
    for start in range(0, T, BT):
        t = start + rows
        m = (t < T)[:, None] & dmask[None, :]
        # padding steps are identities: a = 1 (log 0), x = 0 (log -inf)
        a = tl.load(A + b * sab + t[:, None] * sat + d[None, :] * sad, mask=m, other=0.0 if LOG else 1.0)
        x = tl.load(X + b * sxb + t[:, None] * sxt + d[None, :] * sxd, mask=m, other=float("-inf") if LOG else 0.0)
        a = a.to(tl.float32)
        x = x.to(tl.float32)
        if LOG:
            x = tl.where(rows[:, None] == 0, _logaddexp(a + carry[None, :], x), x)
            _, h = tl.associative_scan((a, x), 0, _log_combine)
            carry = _last_row(h, rows, BT)
        else:
            h, carry = _lin_tile(a, x, carry, rows, BT)
        tl.store(H + b * shb + t[:, None] * sht + d[None, :] * shd, h.to(H.dtype.element_ty), mask=m)
    tl.store(HLAST + b * D + d, carry.to(HLAST.dtype.element_ty), mask=dmask)


# ---- backward (reverse) scan ---------------------------------------------------------


@triton.jit
def _scan_bwd_kernel(
    A,
    G,
    GLAST,
    H,
    H0,
    DX,
    DA,
    W0,
    T,
    D,
    sab,
    sat,
    sad,
    sgb,
    sgt,
    sgd,
    shb,
    sht,
    shd,
    sxb,
    sxt,
    sxd,
    HAS_H0: tl.constexpr,
    HAS_DA: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
):
    """w_t = g_t + a_{t+1} w_{t+1}, w_{T-1} = g_{T-1} + g_last; optionally da_t = w_t h_{t-1}.

    Tiles are loaded newest-first (row 0 = latest step) so the same forward
    associative scan runs backwards in time.
    """
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    rows = tl.arange(0, BT)
    carry = tl.load(GLAST + b * D + d, mask=dmask, other=0.0).to(tl.float32)
    for start in range(0, T, BT):
        t = T - 1 - start - rows
        m = (t >= 0)[:, None] & dmask[None, :]
        # the decay applied to w_{t+1} is a_{t+1}; g_last enters with decay 1
        a_next = tl.load(
            A + b * sab + (t + 1)[:, None] * sat + d[None, :] * sad, mask=m & (t + 1 < T)[:, None], other=1.0
        ).to(tl.float32)
        g = tl.load(G + b * sgb + t[:, None] * sgt + d[None, :] * sgd, mask=m, other=0.0).to(tl.float32)
        w, carry = _lin_tile(a_next, g, carry, rows, BT)
        tl.store(DX + b * sxb + t[:, None] * sxt + d[None, :] * sxd, w.to(DX.dtype.element_ty), mask=m)
        if HAS_DA:
            h_prev = tl.load(
                H + b * shb + (t - 1)[:, None] * sht + d[None, :] * shd, mask=m & (t >= 1)[:, None], other=0.0
            ).to(tl.float32)
            if HAS_H0:
                h0 = tl.load(H0 + b * D + d, mask=dmask, other=0.0).to(tl.float32)
                h_prev = tl.where((t == 0)[:, None], h0[None, :], h_prev)
            tl.store(DA + b * sab + t[:, None] * sat + d[None, :] * sad, (w * h_prev).to(DA.dtype.element_ty), mask=m)
    tl.store(W0 + b * D + d, carry.to(W0.dtype.element_ty), mask=dmask)


# ---- host wrappers (the triton backend of zoo_kernels.scan) ---------------------


def _launch(kernel, bsz, length, dim, *args, **constexprs):
    """Run `kernel` with one program per (batch row, channel block), its BT and BD the tile
    sizes for (length, dim)."""
    bt, bd = _blocks(length, dim)
    grid = (bsz, triton.cdiv(dim, bd))
    kernel[grid](*args, **constexprs, BT=bt, BD=bd, num_warps=NUM_WARPS, num_stages=NUM_STAGES)


def _fwd(a, x, h0, log):
    check_triton_device(x)
    bsz, length, dim = x.shape
    h = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    h_last = torch.empty((bsz, dim), dtype=acc_dtype(a, x), device=x.device)
    h0c = h0.contiguous() if h0 is not None else h_last  # dummy pointer when absent
    _launch(
        _scan_fwd_kernel,
        bsz,
        length,
        dim,
        a,
        x,
        h0c,
        h,
        h_last,
        length,
        dim,
        *a.stride(),
        *x.stride(),
        *h.stride(),
        HAS_H0=h0 is not None,
        LOG=log,
    )
    return h, h_last


def linear_scan_fwd(a, x, h0):
    return _fwd(a, x, h0, log=False)


def log_linear_scan_fwd(log_a, log_x, log_h0):
    return _fwd(log_a, log_x, log_h0, log=True)


def _bwd(a, g, g_last, h, h0, dx_dtype, with_da):
    check_triton_device(g)
    bsz, length, dim = g.shape
    dx = torch.empty(g.shape, dtype=dx_dtype, device=g.device)
    da = torch.empty(a.shape, dtype=a.dtype, device=a.device) if with_da else dx
    w0 = torch.empty((bsz, dim), dtype=acc_dtype(a, g), device=g.device)
    g_last = g_last.contiguous()
    h0c = h0.contiguous() if h0 is not None else w0
    hh = h if with_da else g
    _launch(
        _scan_bwd_kernel,
        bsz,
        length,
        dim,
        a,
        g,
        g_last,
        hh,
        h0c,
        dx,
        da,
        w0,
        length,
        dim,
        *a.stride(),
        *g.stride(),
        *hh.stride(),
        *dx.stride(),
        HAS_H0=h0 is not None,
        HAS_DA=with_da,
    )
    return dx, da, w0


def reverse_scan(a, g, g_last):
    return _bwd(a, g, g_last, None, None, acc_dtype(a, g), with_da=False)[0]


def linear_scan_bwd(a, h, h0, g, g_last):
    a = a.contiguous()  # DA is written with a's strides
    dx, da, w0 = _bwd(a, g, g_last, h, h0, h.dtype, with_da=True)
    dh0 = w0 * a[:, 0] if h0 is not None else torch.zeros_like(w0)
    return da, dx, dh0
