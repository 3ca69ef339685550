"""The delta rule over chunks: the WY/UT form of Yang et al. 2024 ("Parallelizing Linear
Transformers with the Delta Rule over Sequence Length"), with Gated DeltaNet's decay
(Yang, Kautz & Hatamizadeh, ICLR 2025) folded in.

The state H = S^T is (d_k, d_v) per head and follows

    H_t = a_t (I - beta_t k_t k_t^T) H_{t-1} + beta_t k_t v_t^T,    o_t = H_t^T q_t.

Inside a chunk of C positions, with g_i = sum_{j <= i} log a_j (from the chunk start) and
Gamma_ij = exp(g_i - g_j) for i >= j (0 above the diagonal):

    A  = strictly_lower(diag(beta) K K^T * Gamma)
    T  = (I + A)^-1                               the UT transform (unit lower triangular)
    W  = T diag(beta) (K * exp(g)),   U = T diag(beta) V
    U' = U - W H_0                                the chunk's "new values"
    O  = (Q * exp(g)) H_0 + (Q K^T * Gamma) U'
    H_C = exp(g_C) H_0 + (K * exp(g_C - g))^T U'

so the work is matmuls of C x C, C x d_k and d_k x d_v blocks, and a sequential loop over
T / C chunks instead of T steps. Plain DeltaNet is the case a_t = 1 (g = 0).

Document starts (`resets`, (B, T) bool) are handled inside the chunk, not by splitting it:
a start at t sets H_{t-1} := 0. With seg_i the number of starts in the chunk up to i, the
positions interact only within a segment (Gamma and the strictly lower K K^T, Q K^T are
masked to seg_i = seg_j; log a at a start is dropped from g, as its factor multiplies zero),
H_0 reaches only the positions before the chunk's first start (e^g masked to seg_i = 0), the
state carried out starts at the chunk's last start (K e^(g_C - g) masked to seg_i = seg_C)
and e^(g_C) H_0 is dropped when the chunk has a start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def chunk_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_a: Tensor | None = None,
    chunk_size: int = 64,
    h0: Tensor | None = None,
    scale: float | None = None,
    resets: Tensor | None = None,
    kernel: str = "torch",
) -> tuple[Tensor, Tensor]:
    """q, k (B, T, H, Dk), v (B, T, H, Dv), beta (B, T, H), log_a (B, T, H) or None (no decay),
    h0 (B, H, Dk, Dv) or None, resets (B, T) bool or None (True where a document starts).
    Returns o (B, T, H, Dv) and the final state (B, H, Dk, Dv), both in the accumulation dtype
    (float32, or float64 for float64 inputs). kernel: "torch" (this module) or "triton" (the
    forward kernel of triton_chunk.py, its backward this module's recomputed)."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if kernel == "triton":
        from zoo_deltanet import triton_chunk  # imported here: it imports this module

        return triton_chunk.forward(q, k, v, beta, log_a, chunk_size, h0, scale, resets)
    if kernel != "torch":
        raise ValueError(f"chunk_delta_rule: kernel is 'torch' or 'triton', got {kernel!r}")
    return chunk_torch(q, k, v, beta, log_a, chunk_size, h0, scale, resets)


def _exp_where(x: Tensor, keep: Tensor | None) -> Tensor:
    """exp(x) where keep, exactly 0 (and a zero gradient) elsewhere."""
    return x.exp() if keep is None else x.masked_fill(~keep, float("-inf")).exp()


def chunk_torch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_a: Tensor | None,
    chunk_size: int,
    h0: Tensor | None,
    scale: float,
    resets: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The PyTorch chunked form; chunk_delta_rule's arguments, all given."""
    B, T, Hh, Dk = q.shape
    Dv = v.shape[-1]
    acc = torch.promote_types(q.dtype, torch.float32)
    C = chunk_size
    pad = (-T) % C  # zero rows at the end: k = 0 and beta = 0 leave the state alone, a = 1

    def blocks(t: Tensor) -> Tensor:  # (B, T, H, ...) -> (B, H, N, C, ...)
        t = t.to(acc).transpose(1, 2)
        t = F.pad(t, (0, 0) * (t.dim() - 3) + (0, pad))
        return t.reshape(B, Hh, -1, C, *t.shape[3:])

    q, k, v = blocks(q * scale), blocks(k), blocks(v)
    beta = blocks(beta)

    lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    strict = lower.clone().fill_diagonal_(False)
    first = last = carry = None  # masks of the positions H_0 reaches, the positions carried out
    if resets is not None:  # (B, 1, N, C): seg = the number of document starts so far in the chunk
        resets = resets.to(torch.bool)
        seg = F.pad(resets, (0, pad)).reshape(B, 1, -1, C).cumsum(-1)
        same = seg[..., :, None] == seg[..., None, :]
        lower, strict = lower & same, strict & same
        first, last, carry = seg == 0, seg == seg[..., -1:], seg[..., -1:] == 0
        if log_a is not None:
            log_a = log_a.masked_fill(resets[..., None], 0.0)
    kb = k * beta[..., None]
    if log_a is not None:
        g = blocks(log_a).cumsum(-1)
        gamma = (g[..., :, None] - g[..., None, :]).masked_fill(~lower, float("-inf")).exp()
        A = (kb @ k.transpose(-1, -2) * gamma).masked_fill(~strict, 0)
        eg = _exp_where(g, first)[..., None]
        kd = k * _exp_where(g[..., -1:] - g, last)[..., None]  # decayed to the chunk's end
        qg = q * eg
        P = q @ k.transpose(-1, -2) * gamma
        chunk_decay = _exp_where(g[..., -1:], carry)[..., None]
    else:
        A = (kb @ k.transpose(-1, -2)).masked_fill(~strict, 0)
        P = (q @ k.transpose(-1, -2)).masked_fill(~lower, 0)
        if resets is None:
            eg, kd, qg, chunk_decay = 1.0, k, q, None
        else:
            eg = first[..., None].to(acc)
            kd, qg, chunk_decay = k * last[..., None], q * eg, carry[..., None].to(acc)
    eye = torch.eye(C, dtype=acc, device=q.device)
    Tinv = torch.linalg.solve_triangular(eye + A, eye.expand_as(A), upper=False, unitriangular=True)
    W = Tinv @ (kb * eg)
    U = Tinv @ (v * beta[..., None])

    h = q.new_zeros(B, Hh, Dk, Dv) if h0 is None else h0.to(acc)
    # unbind once: indexing chunk n inside the loop would make the backward build a zero-filled
    # full-size gradient per chunk and per tensor (quadratic in the number of chunks)
    n_chunks = q.shape[2]
    decays = [None] * n_chunks if chunk_decay is None else chunk_decay.unbind(2)
    outs = []
    for U_n, W_n, qg_n, P_n, kd_n, a_n in zip(
        U.unbind(2), W.unbind(2), qg.unbind(2), P.unbind(2), kd.transpose(-1, -2).unbind(2), decays
    ):
        u_new = U_n - W_n @ h
        outs.append(qg_n @ h + P_n @ u_new)
        h = (h if a_n is None else h * a_n) + kd_n @ u_new
    o = torch.stack(outs, 2).reshape(B, Hh, -1, Dv)[:, :, :T].transpose(1, 2)
    return o, h
