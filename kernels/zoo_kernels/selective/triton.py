"""Fused Triton kernels for Mamba-1's selective scan. Imported only when the triton backend runs.

    h_t = exp(dt_t A) * h_{t-1} + (dt_t u_t) B_t        y_t = sum_n h_t C_t

One program owns one batch row and BLOCK_D channels and walks time in tiles of
BLOCK_T steps. The tile's decays and inputs, (BLOCK_T, BLOCK_D, N) each, are
built in registers from u, dt (batch, T, D) and B, C (batch, T, N), scanned with
tl.associative_scan along time (the state entering the tile folded into its
first step), contracted with C into y, and only the last row is carried on: the
(batch, T, D, N) tensors never reach memory. The state entering every tile is
stored as a checkpoint, (batch, ceil(T / BLOCK_T), D, N) in float32.

The backward walks the tiles from the end: it recomputes the tile's states from
its checkpoint, runs the reverse scan of w_t = dL/dh_t = gy_t C_t + dA_{t+1} w_{t+1}
(a reverse associative scan; the upstream gradient of h_T enters as its carry)
and takes every input gradient from (h, w) in the same pass, with
dA_t h_{t-1} = h_t - x_t past a tile's first step (mamba-ssm's CUDA backward
does the same). That
difference cancels where the decay is tiny: the gradient of an A entry whose
decays are all ~0 has an absolute error of ~1e-7 |x| per step, small against the
gradient of any entry with a real memory, but not small relative to its own,
nearly zero, value. dA comes back as per-batch-row partial sums and dB, dC as
per-channel-block partial sums, which the host adds up (deterministic; no atomics).
Both directions are one kernel, `_ss_kernel` (GRAD picks which): they share the tile loads and
the tile's forward scan, which the backward reruns from the checkpoint.

All arithmetic is fp32 (fp64 inputs are computed in fp32 here, as in scan/triton.py);
inputs may be bf16/fp16/fp32 with any strides. Block sizes are NOT tuned: no GPU
timing of these kernels exists yet. (BLOCK_T, BLOCK_D, N padded to a power of
two) is kept at most MAX_TILE elements so that a tile fits in registers; N above
MAX_TILE // BLOCK_T is refused (selective_scan then takes its flat path).
Document resets (batch, T) bool, when given: a step where a document starts has decay 0,
in the forward scan, the recomputation and the reverse scan (whose decay a_{t+1} is 0 when
a document starts at t+1), and dh0 is 0 for a row whose first step is a start.
Under TRITON_INTERPRET=1 the kernels also run on CPU tensors (slowly).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from .._tensors import acc_dtype
from ..backends import check_triton_device
from ..scan.triton import _lin_combine

BLOCK_T = 32  # time steps per tile, and the spacing of the backward's checkpoints
BLOCK_D = 16  # channels per program (shrunk when N is large)
MAX_TILE = 8192  # most elements of one (BLOCK_T, BLOCK_D, N) register tile
NUM_WARPS = 8

#: Errors a launch can raise for a shape the kernels cannot take on this device.
LAUNCH_ERRORS = (OutOfResources,)


def unsupported(N: int) -> str | None:
    """Why the fused kernels cannot take a state of size N, or None."""
    if triton.next_power_of_2(N) * BLOCK_T > MAX_TILE:
        return f"N={N} padded to {triton.next_power_of_2(N)} exceeds the register tile ({MAX_TILE} elements)"
    return None


def n_tiles(T: int) -> int:
    return -(-T // BLOCK_T)


def _blocks(D: int, N: int) -> tuple[int, int, int]:
    bn = triton.next_power_of_2(N)
    bd = min(BLOCK_D, triton.next_power_of_2(D))
    while bd > 1 and BLOCK_T * bd * bn > MAX_TILE:
        bd //= 2
    return BLOCK_T, bd, bn


# ---- kernels -------------------------------------------------------------------------


@triton.jit
def _row(tile, rows, R: tl.constexpr):
    """Row R of a (BT, BD, BN) tile, as (BD, BN)."""
    return tl.sum(tl.where(rows[:, None, None] == R, tile, 0.0), axis=0)


@triton.jit
def _load_tile(U, DT, B, C, b, t, T, d, n, dmask, nmask, sub, sut, sud, sdb, sdt, sdd, sbb, sbt, sbn, scb, sct, scn):
    """u, dt (BT, BD) and B, C (BT, BN) of the tile of steps t in fp32, with the tile's masks
    tm (steps), m2 (steps, channels) and mn (steps, state columns); masked entries are 0 (dt = 0:
    an identity step)."""
    tm = t < T
    m2 = tm[:, None] & dmask[None, :]
    mn = tm[:, None] & nmask[None, :]
    u = tl.load(U + b * sub + t[:, None] * sut + d[None, :] * sud, mask=m2, other=0.0).to(tl.float32)
    dt = tl.load(DT + b * sdb + t[:, None] * sdt + d[None, :] * sdd, mask=m2, other=0.0).to(tl.float32)
    bm = tl.load(B + b * sbb + t[:, None] * sbt + n[None, :] * sbn, mask=mn, other=0.0).to(tl.float32)
    cm = tl.load(C + b * scb + t[:, None] * sct + n[None, :] * scn, mask=mn, other=0.0).to(tl.float32)
    return u, dt, bm, cm, tm, m2, mn


@triton.jit
def _decay(dt, a, RS, b, t, tm, srb, srt, HAS_RS: tl.constexpr):
    """exp(dt A) on (BT, BD, BN), 0 at the steps t where a document starts (when HAS_RS)."""
    da = tl.exp(dt[:, :, None] * a[None, :, :])
    if HAS_RS:
        rs = tl.load(RS + b * srb + t * srt, mask=tm, other=0) != 0
        da = tl.where(rs[:, None, None], 0.0, da)
    return da


@triton.jit
def _program(A, D, N, sad, san, BT: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr):
    """This program's batch row b, channel block blk (channels d, state columns n, their masks),
    a tile's rows, A on (d, n) and the offsets st of (d, n) into the (batch, D, N) states.
    Padded channels and state entries get A = 0 (and B = 0), so their decay is 1, their input 0."""
    b = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    d = blk * BD + tl.arange(0, BD)
    n = tl.arange(0, BN)
    dmask = d < D
    nmask = n < N
    sm = dmask[:, None] & nmask[None, :]
    a = tl.load(A + d[:, None] * sad + n[None, :] * san, mask=sm, other=0.0).to(tl.float32)
    st = (b * D + d[:, None]) * N + n[None, :]
    return b, blk, d, n, tl.arange(0, BT), dmask, nmask, sm, a, st


@triton.jit
def _ss_kernel(
    U,
    DT,
    A,
    B,
    C,
    RS,
    CK,
    HS,
    HE,
    OUT,
    GY,
    DDT,
    DA,
    DB,
    DC,
    T,
    D,
    N,
    NT,
    NB,
    sub,
    sut,
    sud,
    sdb,
    sdt,
    sdd,
    sad,
    san,
    sbb,
    sbt,
    sbn,
    scb,
    sct,
    scn,
    sgb,
    sgt,
    sgd,
    srb,
    srt,
    GRAD: tl.constexpr,
    HAS_HS: tl.constexpr,
    HAS_RS: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    BN: tl.constexpr,
):
    """Forward (GRAD=False): walks the tiles from the start, from HS = h0 (when HAS_HS, else
    zeros); writes OUT = y (batch, T, D), HE = h_T and the checkpoints CK (batch, NT, D, N), the
    state entering each tile. GY, DDT, DA, DB, DC are not read.
    Backward (GRAD=True): walks the tiles from the end, recomputing each tile's states from CK,
    from HE = dL/dh_T and GY; writes OUT = du and DDT, contiguous (batch, T, D); DA (batch, D, N)
    per batch row; DB, DC (channel blocks, batch NB, T, N) per channel block; HS = dL/dh0 (batch,
    D, N) when HAS_HS."""
    b, blk, d, n, rows, dmask, nmask, sm, a, st = _program(A, D, N, sad, san, BT, BD, BN)
    if GRAD:
        # carry: w of the step after the tile (w_T = the gradient of h_T); it reaches the tile decayed
        carry = tl.load(HE + st, mask=sm, other=0.0).to(tl.float32)
    elif HAS_HS:
        carry = tl.load(HS + st, mask=sm, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros((BD, BN), tl.float32)
    da_acc = tl.zeros((BD, BN), tl.float32)
    for i in range(0, NT):
        if GRAD:
            k = NT - 1 - i
        else:
            k = i
        t = k * BT + rows
        ck = CK + ((b * NT + k) * D + d[:, None]) * N + n[None, :]
        # padding steps (t >= T) are identities: dt = 0 gives decay 1 and input 0
        u, dt, bm, cm, tm, m2, mn = _load_tile(
            U, DT, B, C, b, t, T, d, n, dmask, nmask, sub, sut, sud, sdb, sdt, sdd, sbb, sbt, sbn, scb, sct, scn
        )
        da = _decay(dt, a, RS, b, t, tm, srb, srt, HAS_RS)
        x = (dt * u)[:, :, None] * bm[:, None, :]
        if GRAD:  # the state entering the tile, from its checkpoint
            h_in = tl.load(ck, mask=sm, other=0.0)
        else:
            h_in = carry
            tl.store(ck, carry, mask=sm)
        xs = tl.where(rows[:, None, None] == 0, x + da * h_in[None, :, :], x)
        _, h = tl.associative_scan((da, xs), 0, _lin_combine)
        off = (b * T + t[:, None]) * D + d[None, :]
        if not GRAD:
            y = tl.sum(h * cm[:, None, :], axis=2)
            tl.store(OUT + off, y.to(OUT.dtype.element_ty), mask=m2)
            carry = _row(h, rows, BT - 1)
        else:
            gy = tl.load(GY + b * sgb + t[:, None] * sgt + d[None, :] * sgd, mask=m2, other=0.0).to(tl.float32)
            # the decay that carries w_{t+1} back to step t; 1 past the end (w_T = ghl enters undecayed)
            dt_next = tl.load(
                DT + b * sdb + (t + 1)[:, None] * sdt + d[None, :] * sdd, mask=m2 & (t + 1 < T)[:, None], other=0.0
            ).to(tl.float32)

            # reverse scan: w_t = gy_t C_t + dA_{t+1} w_{t+1}; padding rows pass the carry through
            a_next = _decay(dt_next, a, RS, b, t + 1, tm & (t + 1 < T), srb, srt, HAS_RS)
            g = gy[:, :, None] * cm[:, None, :]
            g = tl.where(rows[:, None, None] == BT - 1, g + a_next * carry[None, :, :], g)
            _, w = tl.associative_scan((a_next, g), 0, _lin_combine, reverse=True)
            carry = _row(w, rows, 0)
            w = tl.where(tm[:, None, None], w, 0.0)

            # dA_t h_{t-1}: exact in the first row, where h_{t-1} is the checkpoint
            hp = tl.where(rows[:, None, None] == 0, da * h_in[None, :, :], h - x)
            wb = tl.sum(w * bm[:, None, :], axis=2)  # (BT, BD)
            whp = w * hp
            tl.store(OUT + off, (dt * wb).to(OUT.dtype.element_ty), mask=m2)
            ddt = u * wb + tl.sum(whp * a[None, :, :], axis=2)
            tl.store(DDT + off, ddt.to(DDT.dtype.element_ty), mask=m2)
            da_acc += tl.sum(whp * dt[:, :, None], axis=0)
            db = tl.sum(w * (dt * u)[:, :, None], axis=1)  # (BT, BN)
            dc = tl.sum(h * gy[:, :, None], axis=1)
            offn = ((blk * NB + b) * T + t[:, None]) * N + n[None, :]
            tl.store(DB + offn, db, mask=mn)
            tl.store(DC + offn, dc, mask=mn)
    if not GRAD:
        tl.store(HE + st, carry.to(HE.dtype.element_ty), mask=sm)
    else:
        tl.store(DA + st, da_acc, mask=sm)
        if HAS_HS:
            # carry is now w_0; dL/dh0 = dA_0 w_0
            dt0 = tl.load(DT + b * sdb + d * sdd, mask=dmask, other=0.0).to(tl.float32)
            a0 = tl.exp(dt0[:, None] * a)
            if HAS_RS:
                a0 = tl.where(tl.load(RS + b * srb) != 0, 0.0, a0)
            tl.store(HS + st, carry * a0, mask=sm)


# ---- host wrappers (called by the custom ops in selective/__init__.py) ---------------------------


def _check(u, A):
    check_triton_device(u)
    why = unsupported(A.shape[1])
    if why is not None:
        raise ValueError(f"zoo_kernels fused Triton selective scan: {why}")


def _resets(resets, like):
    """The resets as bytes (a dummy pointer and strides when absent)."""
    if resets is None:
        return like, (0, 0)
    r = resets.to(torch.uint8)
    return r, r.stride()


def _launch(u, dt, A, B, C, resets, ck, hs, he, out, grads=None):
    """One `_ss_kernel` over every (batch row, channel block): the forward, or with grads =
    (gy, ddt, dA, dB, dC) the backward. hs None: no h0 (forward) or no dh0 wanted (backward)."""
    b, T, D = u.shape
    N = A.shape[1]
    bt, bd, bn = _blocks(D, N)
    rs, rs_strides = _resets(resets, he)
    _ss_kernel[(b, triton.cdiv(D, bd))](
        u,
        dt,
        A,
        B,
        C,
        rs,
        ck,
        he if hs is None else hs,  # a dummy pointer when absent
        he,
        out,
        *((out,) * 5 if grads is None else grads),  # the forward reads none of them
        T,
        D,
        N,
        n_tiles(T),
        b,
        *u.stride(),
        *dt.stride(),
        *A.stride(),
        *B.stride(),
        *C.stride(),
        *(out if grads is None else grads[0]).stride(),
        *rs_strides,
        GRAD=grads is not None,
        HAS_HS=hs is not None,
        HAS_RS=resets is not None,
        BT=bt,
        BD=bd,
        BN=bn,
        num_warps=NUM_WARPS,
    )


def selective_scan_fwd(u, dt, A, B, C, h0, resets=None):
    """Returns y (u's dtype), h_T (float32, float64 for float64 u), checkpoints (float32)."""
    _check(u, A)
    b, T, D = u.shape
    N = A.shape[1]
    y = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    hl = torch.empty((b, D, N), dtype=acc_dtype(u), device=u.device)
    ck = torch.empty((b, n_tiles(T), D, N), dtype=torch.float32, device=u.device)
    _launch(u, dt, A, B, C, resets, ck, None if h0 is None else h0.contiguous(), hl, y)
    return y, hl, ck


def selective_scan_bwd(u, dt, A, B, C, ck, gy, ghl, want_dh0, resets=None):
    """Returns du, ddt, dA, dB, dC in their inputs' dtypes and dh0 (float32; empty unless want_dh0)."""
    _check(u, A)
    b, T, D = u.shape
    N = A.shape[1]
    nt = n_tiles(T)
    if ck.shape != (b, nt, D, N):
        raise ValueError(f"checkpoints {tuple(ck.shape)} do not match BLOCK_T={BLOCK_T} (expected {(b, nt, D, N)})")
    nb = triton.cdiv(D, _blocks(D, N)[1])
    dev = u.device
    du = torch.empty(u.shape, dtype=u.dtype, device=dev)
    ddt = torch.empty(dt.shape, dtype=dt.dtype, device=dev)
    dA = torch.empty((b, D, N), dtype=torch.float32, device=dev)
    dB = torch.empty((nb, b, T, N), dtype=torch.float32, device=dev)
    dC = torch.empty((nb, b, T, N), dtype=torch.float32, device=dev)
    dh0 = torch.empty((b, D, N) if want_dh0 else (0,), dtype=torch.float32, device=dev)
    grads = (gy, ddt, dA, dB, dC)
    _launch(u, dt, A, B, C, resets, ck.contiguous(), dh0 if want_dh0 else None, ghl.contiguous(), du, grads)
    return du, ddt, dA.sum(0).to(A.dtype), dB.sum(0).to(B.dtype), dC.sum(0).to(C.dtype), dh0
