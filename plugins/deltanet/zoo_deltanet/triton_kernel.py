"""The chunked delta rule's forward as one Triton kernel. Imported only when it runs.

One program owns one (batch, head) and BV columns of the state H (d_k, d_v): the delta
rule acts on H's columns independently, so splitting d_v is exact (the C x C work is
redone per column block). The program walks the chunks in order with H in registers and,
per chunk, does the WY/UT form of chunked.py:

    A   = strictly_lower(diag(beta) K K^T * Gamma)
    T   = (I + A)^-1 = (I - A)(I + A^2)(I + A^4) ... (I + A^(C/2))   A is nilpotent: A^C = 0
    U'  = T diag(beta) V - T diag(beta) (K * e^g) H
    O   = (Q * e^g) H + (Q K^T * Gamma) U'
    H  <- e^(g_C) H + (K * e^(g_C - g))^T U'

With document starts (`r`, int32 (B, T), 1 where a document starts) seg = cumsum(r) inside
the chunk: Gamma (so A and Q K^T) is masked to seg_i = seg_j, log a at a start is dropped
from g, H reaches only seg = 0 (e^g masked), the carried state only seg = seg_C, and e^(g_C) H
is dropped when the chunk has a start (chunked.py's docstring has the reasoning).

The inverse takes log2(C) - 1 squarings and products of C x C blocks (tl.dot). Only H at
the end is written: there is no backward kernel (triton_chunk.py recomputes the backward
with the chunked PyTorch path). Arithmetic is in DTYPE (float32; float64 under the
interpreter), dots in IEEE precision. Under TRITON_INTERPRET=1 it runs on CPU tensors.
"""

from __future__ import annotations

import triton
import triton.language as tl

MAX_BV = 64  # state columns per program (untuned: no GPU timing exists)


@triton.jit
def chunk_delta_rule_fwd_kernel(
    q,
    k,
    v,
    beta,
    g,
    h0,
    r,
    o,
    ht,
    T,
    scale,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    LOG2C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_G: tl.constexpr,
    HAS_H0: tl.constexpr,
    HAS_R: tl.constexpr,
    DTYPE: tl.constexpr,
):
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    rc = tl.arange(0, C)
    rk = tl.arange(0, BK)
    rv = i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    ii, jj = rc[:, None], rc[None, :]
    eye = tl.where(ii == jj, 1.0, 0.0).to(DTYPE)
    # (B, T, H, D) contiguous
    qk_base = i_b * T * H * K + i_h * K
    v_base = i_b * T * H * V + i_h * V
    s_base = i_b * T * H + i_h
    state = i_bh * K * V + rk[:, None] * V + rv[None, :]
    m_state = mk[:, None] & mv[None, :]

    S = tl.zeros([BK, BV], dtype=DTYPE)
    if HAS_H0:
        S = tl.load(h0 + state, mask=m_state, other=0.0).to(DTYPE)
    for n in range(0, tl.cdiv(T, C)):
        t = n * C + rc
        mt = t < T
        m_qk, m_v = mt[:, None] & mk[None, :], mt[:, None] & mv[None, :]
        bq = tl.load(q + qk_base + t[:, None] * (H * K) + rk[None, :], mask=m_qk, other=0.0).to(DTYPE) * scale
        bk = tl.load(k + qk_base + t[:, None] * (H * K) + rk[None, :], mask=m_qk, other=0.0).to(DTYPE)
        bv = tl.load(v + v_base + t[:, None] * (H * V) + rv[None, :], mask=m_v, other=0.0).to(DTYPE)
        bb = tl.load(beta + s_base + t * H, mask=mt, other=0.0).to(DTYPE)
        keep = ii >= jj  # the (i, j) that interact: causal, and within one document
        if HAS_R:
            br = tl.load(r + i_b * T + t, mask=mt, other=0)
            seg = tl.cumsum(br, 0)
            n_r = tl.sum(br, 0)
            keep = keep & (seg[:, None] == seg[None, :])
            first = tl.where(seg == 0, 1.0, 0.0).to(DTYPE)  # the positions H reaches
            last = tl.where(seg == n_r, 1.0, 0.0).to(DTYPE)  # the positions carried out
        if HAS_G:  # g: the cumulative log decay from the chunk start (0 past T: a = 1 there)
            bg = tl.load(g + s_base + t * H, mask=mt, other=0.0).to(DTYPE)
            if HAS_R:
                bg = tl.where(br > 0, 0.0, bg)
            bg = tl.cumsum(bg, 0)
            gamma = tl.exp(tl.where(keep, bg[:, None] - bg[None, :], float("-inf")))
            eg = tl.exp(bg)
            g_last = tl.sum(tl.where(rc == C - 1, bg, 0.0), 0)
            kdec = tl.exp(g_last - bg)
            hdec = tl.exp(g_last)
            if HAS_R:
                eg = eg * first
                kdec = kdec * last
                hdec = tl.where(n_r == 0, hdec, 0.0)
        else:
            gamma = tl.where(keep, 1.0, 0.0).to(DTYPE)
            if HAS_R:
                eg = first
                kdec = last
                hdec = tl.where(n_r == 0, 1.0, 0.0)

        kb = bk * bb[:, None]
        A = tl.where(ii > jj, tl.dot(kb, tl.trans(bk), input_precision="ieee") * gamma, 0.0)
        X = eye - A  # (I + A)^-1, by repeated squaring of -A
        P = -A
        for _ in tl.static_range(LOG2C - 1):
            P = tl.dot(P, P, input_precision="ieee")
            X = X + tl.dot(X, P, input_precision="ieee")
        if HAS_G or HAS_R:
            W = tl.dot(X, kb * eg[:, None], input_precision="ieee")
        else:
            W = tl.dot(X, kb, input_precision="ieee")
        u_new = tl.dot(X, bv * bb[:, None], input_precision="ieee") - tl.dot(W, S, input_precision="ieee")

        qk = tl.dot(bq, tl.trans(bk), input_precision="ieee") * gamma
        if HAS_G or HAS_R:
            out = tl.dot(bq * eg[:, None], S, input_precision="ieee")
        else:
            out = tl.dot(bq, S, input_precision="ieee")
        out += tl.dot(qk, u_new, input_precision="ieee")
        tl.store(o + v_base + t[:, None] * (H * V) + rv[None, :], out.to(o.dtype.element_ty), mask=m_v)

        if HAS_G or HAS_R:
            kd = bk * kdec[:, None]
            S = S * hdec + tl.dot(tl.trans(kd), u_new, input_precision="ieee")
        else:
            S = S + tl.dot(tl.trans(bk), u_new, input_precision="ieee")
    tl.store(ht + state, S.to(ht.dtype.element_ty), mask=m_state)


def launch(q, k, v, beta, g, h0, r, o, ht, scale: float, chunk: int) -> None:
    """q, k (B, T, H, K), v and o (B, T, H, V), beta and g (B, T, H), h0 and ht (B, H, K, V),
    r int32 (B, T), all contiguous; g, h0 and r may be None."""
    import torch

    B, T, H, K = q.shape
    V = v.shape[-1]
    BK = max(16, triton.next_power_of_2(K))
    BV = min(MAX_BV, max(16, triton.next_power_of_2(V)))
    dtype = tl.float64 if q.dtype == torch.float64 else tl.float32
    grid = (triton.cdiv(V, BV), B * H)
    chunk_delta_rule_fwd_kernel[grid](
        q,
        k,
        v,
        beta,
        beta if g is None else g,
        q if h0 is None else h0,
        beta if r is None else r,
        o,
        ht,
        T,
        scale,
        H=H,
        K=K,
        V=V,
        C=chunk,
        LOG2C=chunk.bit_length() - 1,
        BK=BK,
        BV=BV,
        HAS_G=g is not None,
        HAS_H0=h0 is not None,
        HAS_R=r is not None,
        DTYPE=dtype,
    )
