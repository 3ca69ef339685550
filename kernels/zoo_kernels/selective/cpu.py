"""The fused selective scan on CPU (selective_scan.c).

It never stores the (batch, T, D, N) tensors: the forward keeps the state of a channel
block in cache and checkpoints it every K steps; the backward recomputes each chunk's
states from its checkpoint. HF's and mingru-pytorch-style CPU paths materialise those
tensors, which is what makes Mamba-1 slow on CPU. Inputs: one dtype (float32/float64),
contiguous; the custom ops in selective/__init__.py call these.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import cbuild

SIGNATURE = cbuild.Signature(
    "zoo_selective_scan",
    """
    int kind, ptr u, ptr dt, ptr A, ptr Bm, ptr Cm, ptr R, ptr h0, ptr gy, ptr ghl, ptr ck_in,
    ptr y, ptr hl, ptr ck, ptr du, ptr ddt, ptr dA, ptr dB, ptr dC, ptr dh0,
    i64 B, i64 L, i64 D, i64 N, i64 K, i64 block, int threads""",
)
#: `kind` values: forward float32; backward float32 (+1: float64).
FORWARD, BACKWARD = 0, 2
#: Steps between the forward's state checkpoints (the backward recomputes K steps at a time).
CHECKPOINT_EVERY = 32
#: Cap on the backward's per-thread scratch (a chunk's states and decays, (2K + 1) x N x block).
SCRATCH_BYTES = 8 << 20


def _plan(u: Tensor, N: int) -> tuple[int, int]:
    b, T, D = u.shape
    threads = cbuild.threads(u.numel())
    fits = SCRATCH_BYTES // ((2 * CHECKPOINT_EVERY + 1) * N * u.element_size())
    return threads, min(cbuild.block(b, D, threads), max(16, fits // 16 * 16))


def _call(kind: int, u: Tensor, A: Tensor, B: Tensor, **tensors) -> None:
    threads, block = _plan(u, A.shape[1])
    err = cbuild.function(SIGNATURE)(
        kind=kind + (u.dtype == torch.float64),
        u=u,
        A=A,
        Bm=B,
        **tensors,
        B=u.shape[0],
        L=u.shape[1],
        D=u.shape[2],
        N=A.shape[1],
        K=CHECKPOINT_EVERY,
        block=block,
        threads=threads,
    )
    if err:
        raise MemoryError("zoo-kernels: the fused selective scan could not allocate its scratch buffers")


def n_checkpoints(T: int) -> int:
    return -(-T // CHECKPOINT_EVERY)


def _bytes(resets: Tensor | None) -> Tensor | None:
    return None if resets is None else resets.to(torch.bool).contiguous()


def selective_scan_fwd(u, dt, A, B, C, h0, resets=None):
    """Returns y, h_T and the checkpoints (batch, ceil(T / K), D, N), all in u's dtype."""
    b, T, D = u.shape
    N = A.shape[1]
    y, hl, ck = torch.empty_like(u), u.new_empty(b, D, N), u.new_empty(b, n_checkpoints(T), D, N)
    _call(FORWARD, u, A, B, dt=dt, Cm=C, R=_bytes(resets), h0=h0, y=y, hl=hl, ck=ck)
    return y, hl, ck


def selective_scan_bwd(u, dt, A, B, C, ck, gy, ghl, want_dh0, resets=None):
    """Returns du, ddt, dA, dB, dC and dh0 (empty unless want_dh0)."""
    b, T, D = u.shape
    N = A.shape[1]
    blocks = -(-D // _plan(u, N)[1])
    du, ddt = torch.empty_like(u), torch.empty_like(u)
    dA = u.new_empty(b, D, N)  # per batch row, summed below
    dB, dC = u.new_empty(blocks, b, T, N), u.new_empty(blocks, b, T, N)  # per channel block
    dh0 = u.new_empty(b, D, N) if want_dh0 else u.new_empty(0)
    _call(
        BACKWARD,
        u,
        A,
        B,
        dt=dt,
        Cm=C,
        R=_bytes(resets),
        gy=gy,
        ghl=ghl,
        ck_in=ck,
        du=du,
        ddt=ddt,
        dA=dA,
        dB=dB,
        dC=dC,
        dh0=dh0 if want_dh0 else None,
    )
    return du, ddt, dA.sum(0), dB.sum(0), dC.sum(0), dh0
