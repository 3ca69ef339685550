"""Triton kernels for Mamba-2's chunked SSD (Dao & Gu 2024, arXiv 2405.21060, section 6).

Imported only when the triton backend runs (`import triton` here is the package, not
this module: there are no implicit relative imports). Per (batch, head), with chunks
of L steps, u_s = dt_s x_s and a_l = sum_{j<=l} dt_j A (the chunk's cumulative decay):

  1. the chunk cumulative sum a (recomputed from dt inside every kernel: L numbers);
  2. `_chunk_state`: each chunk's end state from a zero start, sum_s exp(a_last - a_s) u_s B_s^T;
  3. `_state_pass`: h_c = exp(a_last_c) h_{c-1} + state_c, storing the state entering each
     chunk (one program per (batch, head, block of P*N), a loop over chunks);
  4. `_chunk_out`: y_l = sum_{s<=l} (C_l . B_s) exp(a_l - a_s) u_s    (intra-chunk)
                          + exp(a_l) h_in C_l                             (chunk output).
Every exponent is a sum of dt * A <= 0 over a causal span, so nothing overflows.

The backward reruns 2-3 for the entering states (nothing but the inputs is saved), then
  - `_chunk_state` again, on (gy, C) with weights exp(a_l): D_c = dL/dh_in_c from chunk c's y;
  - `_state_pass` in reverse: gH_c = dL/dh_out_c = D_{c+1} + exp(a_last_{c+1}) gH_{c+1},
    starting from the gradient of h_T; what is left at the front is dL/dh0;
  - `_chunk_out` with GRAD: dx, ddt, dB, dC and dA from the closed forms (with S = CB * M * GU,
    M_ls = exp(a_l - a_s) [s <= l], GU = gy u^T):
        du = (CB * M)^T gy + exp(a_last - a) * (B gH^T)
        dC = (GU * M) B + exp(a) * (gy h_in)
        dB = (GU * M)^T C + exp(a_last - a) * (u gH)
        da_l = rowsum(S)_l - colsum(S)_l + exp(a_l) gy_l . (h_in C_l) - Q_l
               + [l = last] (sum_s Q_s + exp(a_last) <gH, h_in>),   Q_s = exp(a_last - a_s) u_s . (gH B_s)
        d(dt_j A) = sum_{l>=j} da_l (a reverse cumsum), so ddt = x . du + A d(dt A), dA = sum dt d(dt A).
    dB, dC come back per head and dA per (batch, chunk, head); the host sums them over the heads
    of a group and over batch and chunks (deterministic; no atomics).

Document resets (batch, T) bool, when given (HAS_RS): a start's decay is 0. Every kernel keeps
a as the plain cumulative sum and masks with seg_l, the starts in the chunk up to l (as chunk.py):
M_ls also needs seg_l = seg_s, exp(a_last - a_s) counts only in the chunk's last segment, exp(a_l)
only before its first start, and a chunk with a start passes no state on (its exp(a_last) is 0).
The backward's closed forms hold with these masked factors (a mask is a constant factor), and
dA's gradient through a start's own decay is 0, as it is in the recurrence.

Padding (a tail shorter than L, block sizes rounded up to powers of two >= 16 for tl.dot) loads
dt = x = B = C = gy = 0: decay 1 and no input, so a padded step leaves everything unchanged.
Arithmetic is float32 (float64 for float64 inputs; the interpreter tests run both). Products of
float32 operands use IEEE precision; bf16/fp16 inputs use TF32. Block sizes are NOT tuned: no GPU
timing of these kernels exists yet (benchmarks/kernels/test_ssd_benchmarks.py is ready for one).
Under TRITON_INTERPRET=1 the kernels also run on CPU tensors (slowly).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .._tensors import acc_dtype
from ..backends import check_triton_device

NUM_WARPS = 4
BLOCK_N_MAX = 64  # state columns per N block (loops over N)
BLOCK_P_MAX = 64  # head channels per program of the forward chunk scan
BLOCK_S = 1024  # state entries (P*N) per program of the state passing


def _pow2(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(n))


def blocks(P: int, N: int, L: int) -> dict:
    """Block sizes for head dim P, state N, chunk L (tl.dot wants every side >= 16)."""
    return {"BL": _pow2(L), "BP": _pow2(P), "BN": min(BLOCK_N_MAX, _pow2(N)), "BPF": min(BLOCK_P_MAX, _pow2(P))}


# ---- pieces shared by the kernels --------------------------------------------------------


@triton.jit
def _acc(v, F64: tl.constexpr):
    if F64:
        return v.to(tl.float64)
    else:
        return v.to(tl.float32)


@triton.jit
def _chunk_cumsum(
    DT, A, RS, bi, h, c, T, L, sdb, sdt, sdh, srb, srt, F64: tl.constexpr, HAS_RS: tl.constexpr, BL: tl.constexpr
):
    """Step 1: positions t of chunk c, their mask, dt, a = cumsum(dt * A) (padding: dt = 0), its
    last value, and with resets seg (the starts up to each position) and the chunk's number of
    starts (both 0 without resets)."""
    l = tl.arange(0, BL)
    t = c * L + l
    tm = (l < L) & (t < T)
    dt = _acc(tl.load(DT + bi * sdb + t * sdt + h * sdh, mask=tm, other=0.0), F64)
    dA = dt * _acc(tl.load(A + h), F64)
    if HAS_RS:
        rs = tl.load(RS + bi * srb + t * srt, mask=tm, other=0).to(tl.int32)
        seg = tl.cumsum(rs, 0)
        starts = tl.sum(rs, 0)
    else:
        seg = tl.zeros((BL,), tl.int32)
        starts = 0
    return l, t, tm, dt, tl.cumsum(dA, 0), tl.sum(dA, 0), seg, starts


@triton.jit
def _decays(l, a, a_last, seg, starts, HAS_RS: tl.constexpr):
    """M (l, s) = exp(a_l - a_s) within a segment, causal; to_end = exp(a_last - a) in the last
    segment; from_start = exp(a) before the first start; the chunk's decay exp(a_last), 0 with a start."""
    causal = l[:, None] >= l[None, :]
    if HAS_RS:
        causal = causal & (seg[:, None] == seg[None, :])
    m = tl.exp(tl.where(causal, a[:, None] - a[None, :], float("-inf")))
    to_end = tl.exp(a_last - a)
    from_start = tl.exp(a)
    chunk = tl.exp(a_last)
    if HAS_RS:
        to_end = tl.where(seg == starts, to_end, 0.0)
        from_start = tl.where(seg == 0, from_start, 0.0)
        chunk = tl.where(starts == 0, chunk, 0.0)
    return m, to_end, from_start, chunk


@triton.jit
def _tile(PTR, bi, t, tm, head, cols, cm, s_b, s_t, s_h, s_c, F64: tl.constexpr):
    """A (BL, cols) tile of a (batch, T, heads or groups, cols) tensor; padding is 0."""
    v = tl.load(
        PTR + bi * s_b + t[:, None] * s_t + head * s_h + cols[None, :] * s_c, mask=tm[:, None] & cm[None, :], other=0.0
    )
    return _acc(v, F64)


# ---- 2. chunk states (and, in the backward, the gradient entering each chunk's state) ----


@triton.jit
def _chunk_state(
    X,
    DT,
    A,
    Y,
    OUT,
    T,
    H,
    P,
    N,
    L,
    NC,
    HPG,
    sxb,
    sxt,
    sxh,
    sxp,
    sdb,
    sdt,
    sdh,
    RS,
    srb,
    srt,
    syb,
    syt,
    syg,
    syn,
    GRAD: tl.constexpr,
    F64: tl.constexpr,
    HAS_RS: tl.constexpr,
    PREC: tl.constexpr,
    BL: tl.constexpr,
    BP: tl.constexpr,
    BN: tl.constexpr,
):
    """OUT[b, c, h] (P, N) = sum_l w_l X_l Y_l^T, contiguous (batch, NC, H, P, N).
    Forward (GRAD=False): X = x, Y = B, w = exp(a_last - a_l) dt_l: the chunk's end state.
    Backward (GRAD=True): X = gy, Y = C, w = exp(a_l): dL/dh_in from the chunk's outputs."""
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    h = pid % H
    c = tl.program_id(1)
    n = tl.program_id(2) * BN + tl.arange(0, BN)
    p = tl.arange(0, BP)
    l, t, tm, dt, a, a_last, seg, starts = _chunk_cumsum(
        DT, A, RS, bi, h, c, T, L, sdb, sdt, sdh, srb, srt, F64, HAS_RS, BL
    )
    if GRAD:
        w = tl.exp(a)
        if HAS_RS:
            w = tl.where(seg == 0, w, 0.0)
    else:
        w = tl.exp(a_last - a) * dt
        if HAS_RS:
            w = tl.where(seg == starts, w, 0.0)
    xs = _tile(X, bi, t, tm, h, p, p < P, sxb, sxt, sxh, sxp, F64) * w[:, None]
    ys = _tile(Y, bi, t, tm, h // HPG, n, n < N, syb, syt, syg, syn, F64)
    st = tl.dot(tl.trans(xs), ys, input_precision=PREC)
    off = (((bi * NC + c) * H + h) * P + p[:, None]) * N + n[None, :]
    tl.store(OUT + off, st, mask=(p < P)[:, None] & (n < N)[None, :])


# ---- 3. state passing between chunks (reversed in the backward) --------------------------


@triton.jit
def _state_pass(
    S,
    DT,
    A,
    H0,
    HIN,
    HL,
    T,
    H,
    L,
    NC,
    PN,
    sdb,
    sdt,
    sdh,
    RS,
    srb,
    srt,
    HAS_H0: tl.constexpr,
    REVERSE: tl.constexpr,
    F64: tl.constexpr,
    HAS_RS: tl.constexpr,
    BL: tl.constexpr,
    BS: tl.constexpr,
):
    """h <- exp(a_last_c) h + S[c] over the chunks, storing HIN[c] = h before each update.
    Forward: S = chunk states, H0 = h0, HL = h_T. Reverse: S = D (gradients from each
    chunk's y), H0 = dL/dh_T, HIN = dL/dh_out per chunk, HL = dL/dh0."""
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    h = pid % H
    s = tl.program_id(1) * BS + tl.arange(0, BS)
    sm = s < PN
    if HAS_H0:
        st = _acc(tl.load(H0 + (bi * H + h) * PN + s, mask=sm, other=0.0), F64)
    else:
        st = _acc(tl.zeros((BS,), tl.float32), F64)
    for i in range(0, NC):
        if REVERSE:
            c = NC - 1 - i
        else:
            c = i
        _, _, _, _, _, a_last, _, starts = _chunk_cumsum(
            DT, A, RS, bi, h, c, T, L, sdb, sdt, sdh, srb, srt, F64, HAS_RS, BL
        )
        decay = tl.exp(a_last)
        if HAS_RS:
            decay = tl.where(starts == 0, decay, 0.0)
        off = ((bi * NC + c) * H + h) * PN + s
        tl.store(HIN + off, st, mask=sm)
        st = decay * st + tl.load(S + off, mask=sm, other=0.0)
    tl.store(HL + (bi * H + h) * PN + s, st.to(HL.dtype.element_ty), mask=sm)


# ---- 4. chunk outputs, and their backward ------------------------------------------------


@triton.jit
def _n_block(B, C, GH, HIN, bi, t, tm, g, n0, N, st, p, pm, sbb, sbt, sbg, sbn, scb, sct, scg, scn, GRAD, F64, BN):
    """The operands on state columns n0 + [0, BN): the chunk's B and C tiles, and the (BP, BN)
    blocks of HIN and (backward) GH at state offset st."""
    n = n0 + tl.arange(0, BN)
    nm = n < N
    bm = _tile(B, bi, t, tm, g, n, nm, sbb, sbt, sbg, sbn, F64)
    cm = _tile(C, bi, t, tm, g, n, nm, scb, sct, scg, scn, F64)
    pn = (st + p[:, None]) * N + n[None, :]
    pnm = pm[:, None] & nm[None, :]
    hin = _acc(tl.load(HIN + pn, mask=pnm, other=0.0), F64)
    if GRAD:
        gh = _acc(tl.load(GH + pn, mask=pnm, other=0.0), F64)
    else:
        gh = hin  # not read by the forward
    return n, nm, bm, cm, gh, hin


@triton.jit
def _chunk_out(
    X,
    DT,
    A,
    B,
    C,
    HIN,
    OUT,
    GY,
    GH,
    DDT,
    DAP,
    DB,
    DC,
    T,
    H,
    P,
    N,
    L,
    NC,
    HPG,
    sxb,
    sxt,
    sxh,
    sxp,
    sdb,
    sdt,
    sdh,
    RS,
    srb,
    srt,
    sbb,
    sbt,
    sbg,
    sbn,
    scb,
    sct,
    scg,
    scn,
    sgb,
    sgt,
    sgh,
    sgp,
    GRAD: tl.constexpr,
    F64: tl.constexpr,
    HAS_RS: tl.constexpr,
    PREC: tl.constexpr,
    BL: tl.constexpr,
    BP: tl.constexpr,
    BN: tl.constexpr,
):
    """Forward (GRAD=False): OUT = Y (batch, T, H, P), the intra-chunk quadratic form plus the
    entering state's output, for head channels program_id(2) * BP + [0, BP); GY to DC are not read.
    Backward (GRAD=True, BP covers P): OUT = DX (batch, T, H, P), DDT (batch, T, H), DB, DC per head
    (batch, T, H, N), DAP (batch, NC, H), all contiguous, from GY and GH = dL/dh_out per chunk.
    Both take HIN = h_in per chunk, (batch, NC, H, P, N)."""
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    h = pid % H
    g = h // HPG
    c = tl.program_id(1)
    p = tl.program_id(2) * BP + tl.arange(0, BP)
    pm = p < P
    l, t, tm, dt, a, a_last, seg, starts = _chunk_cumsum(
        DT, A, RS, bi, h, c, T, L, sdb, sdt, sdh, srb, srt, F64, HAS_RS, BL
    )
    x = _tile(X, bi, t, tm, h, p, pm, sxb, sxt, sxh, sxp, F64)
    cb = _acc(tl.zeros((BL, BL), tl.float32), F64)
    y_in = _acc(tl.zeros((BL, BP), tl.float32), F64)  # C_l h_in^T
    du_state = _acc(tl.zeros((BL, BP), tl.float32), F64)  # B_s gH^T (backward)
    r = _acc(tl.zeros((BP,), tl.float32), F64)  # <gH, h_in> by rows (backward)
    st = ((bi * NC + c) * H + h) * P
    for n0 in range(0, N, BN):
        n, nm, bm, cm, gh, hin = _n_block(
            B, C, GH, HIN, bi, t, tm, g, n0, N, st, p, pm, sbb, sbt, sbg, sbn, scb, sct, scg, scn, GRAD, F64, BN
        )
        cb += tl.dot(cm, tl.trans(bm), input_precision=PREC)
        y_in += tl.dot(cm, tl.trans(hin), input_precision=PREC)
        if GRAD:
            du_state += tl.dot(bm, tl.trans(gh), input_precision=PREC)
            r += tl.sum(gh * hin, 1)
    m, to_end, from_start, chunk = _decays(l, a, a_last, seg, starts, HAS_RS)
    cbm = cb * m
    th = (bi * T + t) * H + h
    tmp = tm[:, None] & pm[None, :]
    if not GRAD:
        y = tl.dot(cbm * dt[None, :], x, input_precision=PREC) + from_start[:, None] * y_in
        tl.store(OUT + th[:, None] * P + p[None, :], y.to(OUT.dtype.element_ty), mask=tmp)
    else:
        gy = _tile(GY, bi, t, tm, h, p, pm, sgb, sgt, sgh, sgp, F64)
        u = x * dt[:, None]
        gu = tl.dot(gy, tl.trans(u), input_precision=PREC)  # (l, s): gy_l . u_s
        du = tl.dot(tl.trans(cbm), gy, input_precision=PREC) + to_end[:, None] * du_state
        s_ = cbm * gu
        q = to_end * tl.sum(u * du_state, 1)
        da = tl.sum(s_, 1) - tl.sum(s_, 0) + from_start * tl.sum(gy * y_in, 1) - q
        da += tl.where(l == BL - 1, tl.sum(q, 0) + chunk * tl.sum(r, 0), 0.0)
        d_dta = tl.cumsum(da, 0, reverse=True)  # dL/d(dt_j A)
        ddt = tl.sum(x * du, 1) + _acc(tl.load(A + h), F64) * d_dta
        tl.store(OUT + th[:, None] * P + p[None, :], (du * dt[:, None]).to(OUT.dtype.element_ty), mask=tmp)
        tl.store(DDT + th, ddt.to(DDT.dtype.element_ty), mask=tm)
        tl.store(DAP + (bi * NC + c) * H + h, tl.sum(dt * d_dta, 0))

        gum = gu * m
        for n0 in range(0, N, BN):
            n, nm, bm, cm, gh, hin = _n_block(
                B, C, GH, HIN, bi, t, tm, g, n0, N, st, p, pm, sbb, sbt, sbg, sbn, scb, sct, scg, scn, GRAD, F64, BN
            )
            dc = tl.dot(gum, bm, input_precision=PREC) + from_start[:, None] * tl.dot(gy, hin, input_precision=PREC)
            db = tl.dot(tl.trans(gum), cm, input_precision=PREC) + to_end[:, None] * tl.dot(u, gh, input_precision=PREC)
            tn = th[:, None] * N + n[None, :]
            tl.store(DC + tn, dc, mask=tm[:, None] & nm[None, :])
            tl.store(DB + tn, db, mask=tm[:, None] & nm[None, :])


# ---- host wrappers (called by the custom ops in ssd/__init__.py) ----------------------------
# The kernels' signatures repeat the sizes and strides they share: grouping them needs tuple kernel
# arguments, which triton 3.0-3.1 (the [triton] extra's floor; torch 2.5 ships 3.1) lacks. The
# launches build them once (`_Plan.sizes_strides`, `_Plan.flags`); each stride stays its own
# integer argument, so triton still specialises the unit ones.


class _Plan(NamedTuple):
    """One call's sizes, dtype flags, block sizes and resets (a uint8 copy and its strides, or a
    dummy pointer the kernels do not read), shared by every launch of the call."""

    b: int
    T: int
    H: int
    P: int
    G: int
    N: int
    L: int
    nc: int
    f64: bool
    prec: str
    bs: dict
    rs: tuple
    has_rs: bool

    def sizes_strides(self, src, dt) -> tuple:
        """What `_chunk_state` and `_chunk_out` take after their pointers: the sizes, then the
        strides of src (x or gy), dt and the resets."""
        sizes = (self.T, self.H, self.P, self.N, self.L, self.nc, self.H // self.G)
        return (*sizes, *src.stride(), *dt.stride(), *self.rs)

    def flags(self, **more) -> dict:
        """The constexprs every kernel takes (and `more`), with the launch's num_warps."""
        return {"F64": self.f64, "HAS_RS": self.has_rs, "BL": self.bs["BL"], "num_warps": NUM_WARPS, **more}


def _plan(x, B, chunk_size, resets) -> _Plan:
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    L = min(chunk_size, T)
    f64 = x.dtype == torch.float64
    prec = "ieee" if x.dtype in (torch.float32, torch.float64) else "tf32"
    if resets is None:
        rs = (x, 0, 0)  # a dummy pointer: the kernels do not read it
    else:
        r8 = resets.to(torch.uint8)
        rs = (r8, *r8.stride())
    return _Plan(b, T, H, P, G, N, L, triton.cdiv(T, L), f64, prec, blocks(P, N, L), rs, resets is not None)


def _chunk_states(src, dt, A, M, grad, plan):
    """Step 2 (_chunk_state) over every chunk: from x and B, or in the backward (grad) from gy and C."""
    b, T, H, P, G, N, L, nc, f64, prec, bs, rs, has_rs = plan
    out = torch.empty((b, nc, H, P, N), dtype=torch.float64 if f64 else torch.float32, device=src.device)
    _chunk_state[(b * H, nc, triton.cdiv(N, bs["BN"]))](
        src,
        dt,
        A,
        M,
        out,
        *plan.sizes_strides(src, dt),
        *M.stride(),
        **plan.flags(GRAD=grad, PREC=prec, BP=bs["BP"], BN=bs["BN"]),
    )
    return out


def _pass_states(states, dt, A, init, reverse, plan):
    """Step 3 (_state_pass): what enters every chunk and what leaves the last one, from `init`
    (None: zeros); reversed in the backward."""
    b, T, H, P, G, N, L, nc, f64, prec, bs, rs, has_rs = plan
    entering = torch.empty_like(states)
    last = torch.empty((b, H, P, N), dtype=states.dtype, device=states.device)
    _state_pass[(b * H, triton.cdiv(P * N, BLOCK_S))](
        states,
        dt,
        A,
        last if init is None else init,
        entering,
        last,
        T,
        H,
        L,
        nc,
        P * N,
        *dt.stride(),
        *rs,
        **plan.flags(HAS_H0=init is not None, REVERSE=reverse, BS=BLOCK_S),
    )
    return entering, last


def _states(x, dt, A, B, h0, plan):
    """Steps 2-3: the state entering every chunk (batch, NC, H, P, N) and h_T."""
    return _pass_states(
        _chunk_states(x, dt, A, B, False, plan), dt, A, None if h0 is None else h0.contiguous(), False, plan
    )


def _outputs(plan, x, dt, A, B, C, h_in, out, grads=None):
    """Step 4 (`_chunk_out`): y into `out`, or in the backward (grads = (gy, g_out, ddt, da_part,
    db, dc)) dx into `out` and the other gradients into theirs."""
    b, T, H, P, G, N, L, nc, f64, prec, bs, rs, has_rs = plan
    if grads is None:  # the forward: one program per block of BPF head channels; nothing to read back
        grid, bp, grads = (b * H, nc, triton.cdiv(P, bs["BPF"])), bs["BPF"], (out,) * 6
    else:
        grid, bp = (b * H, nc, 1), bs["BP"]
    _chunk_out[grid](
        x,
        dt,
        A,
        B,
        C,
        h_in,
        out,
        *grads,
        *plan.sizes_strides(x, dt),
        *B.stride(),
        *C.stride(),
        *grads[0].stride(),
        **plan.flags(GRAD=grads[0] is not out, PREC=prec, BP=bp, BN=bs["BN"]),
    )


def ssd_fwd(x, dt, A, B, C, chunk_size, h0, resets=None):
    """Returns y (x's dtype) and h_T (float32; float64 for float64 x)."""
    check_triton_device(x)
    plan = _plan(x, B, chunk_size, resets)
    b, T, H, P, G, N, L, nc, f64, prec, bs, rs, has_rs = plan
    h_in, h_last = _states(x, dt, A, B, h0, plan)
    y = torch.empty((b, T, H, P), dtype=x.dtype, device=x.device)
    _outputs(plan, x, dt, A, B, C, h_in, y)
    return y, h_last


def ssd_bwd(x, dt, A, B, C, chunk_size, h0, resets, gy, gh):
    """Returns dx, ddt, dA, dB, dC in their inputs' dtypes and dh0 (h_T's dtype)."""
    check_triton_device(x)
    plan = _plan(x, B, chunk_size, resets)
    b, T, H, P, G, N, L, nc, f64, prec, bs, rs, has_rs = plan
    acc = acc_dtype(x)
    dev = x.device
    h_in, _ = _states(x, dt, A, B, h0, plan)
    g_out, dh0 = _pass_states(_chunk_states(gy, dt, A, C, True, plan), dt, A, gh.contiguous(), True, plan)
    dx = torch.empty((b, T, H, P), dtype=x.dtype, device=dev)
    ddt = torch.empty((b, T, H), dtype=dt.dtype, device=dev)
    da_part = torch.empty((b, nc, H), dtype=acc, device=dev)
    db = torch.empty((b, T, H, N), dtype=acc, device=dev)
    dc = torch.empty((b, T, H, N), dtype=acc, device=dev)
    _outputs(plan, x, dt, A, B, C, h_in, dx, (gy, g_out, ddt, da_part, db, dc))
    per_group = lambda d: d.view(b, T, G, H // G, N).sum(3)  # noqa: E731  heads of a group share B, C
    return (dx, ddt, da_part.sum((0, 1)).to(A.dtype), per_group(db).to(B.dtype), per_group(dc).to(C.dtype), dh0)
