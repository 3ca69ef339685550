"""Mamba-1's selective scan (Gu & Dao 2023, eq. 2a-2b) with a diagonal (D, N) state:

    h_t = exp(dt_t A) * h_{t-1} + dt_t u_t B_t        y_t = C_t . h_t

u, dt (batch, T, D); A (D, N); B, C (batch, T, N); h0 (batch, D, N) or None.
Returns y (batch, T, D) in u's dtype and h_T (batch, D, N) in float32 (float64
for float64 inputs).

Four paths:
- `naive`: one step per token, the definition.
- `flat`: the decays and inputs materialised as (batch, T, D*N) channels and
  handed to `linear_scan` (chunked/compiled on CPU, Triton on CUDA). It needs
  several (batch, T, D, N) tensors, so it is only the fallback: without a C
  compiler on CPU, and for a state the fused Triton kernel refuses (N > 256 at
  its shipped block sizes), with a warning.
- `fused` (CPU): the compiled kernel in cpu_selective_scan_src.py. It never
  stores the (batch, T, D, N) tensors: the forward keeps the state of a channel
  block in cache and checkpoints it every K steps; the backward recomputes each
  chunk's states from its checkpoint. HF's and mingru-pytorch-style CPU paths
  materialise those tensors, which is what makes Mamba-1 slow on CPU.
- `triton` (CUDA, the triton backend): the same idea in triton_selective.py:
  each (time tile, channel block) of the state lives in registers, and only a
  checkpoint per tile of BLOCK_T steps is stored for the backward. Under
  TRITON_INTERPRET=1 it also runs on CPU tensors (for the tests).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import cpu_kernel
from .backends import select, triton_installed
from .chunked import acc_dtype

#: Steps between the forward's state checkpoints (the backward recomputes K steps at a time).
CHECKPOINT_EVERY = 32


def selective_scan_naive(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    acc = acc_dtype(u)
    h = u.new_zeros(u.shape[0], A.shape[0], A.shape[1], dtype=acc) if h0 is None else h0.to(acc)
    A = A.to(acc)
    ys = []
    for t in range(u.shape[1]):
        dt_t = dt[:, t, :, None].to(acc)                                   # (b, D, 1)
        h = torch.exp(dt_t * A) * h + dt_t * B[:, t, None, :].to(acc) * u[:, t, :, None].to(acc)
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t].to(acc)))
    return torch.stack(ys, 1).to(u.dtype), h


def selective_scan_flat(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                        h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    from . import linear_scan

    b, T, D = u.shape
    N = A.shape[1]
    acc = acc_dtype(u)
    dt = dt.to(acc)[..., None]                                               # (b, T, D, 1)
    decay = torch.exp(dt * A.to(acc))                                        # (b, T, D, N)
    # dt * u first, on (b, T, D): one full-size product (and its backward) instead of two
    inp = (dt * u.to(acc)[..., None]) * B.to(acc)[:, :, None, :]             # (b, T, D, N)
    init = None if h0 is None else h0.to(acc).reshape(b, D * N)
    h, h_last = linear_scan(decay.reshape(b, T, D * N), inp.reshape(b, T, D * N), init)
    y = torch.einsum("btdn,btn->btd", h.view(b, T, D, N), C.to(acc))
    return y.to(u.dtype), h_last.view(b, D, N)


# ---- the fused CPU kernel as a custom op (torch.compile traces it without breaks) ----

def _call(kind, threads, block, shapes, **ptrs):
    names = ["u", "dt", "A", "B", "C", "h0", "gy", "ghl", "ck_in", "y", "hl", "ck", "du", "ddt", "dA",
             "dB", "dC", "dh0"]
    args = [None if ptrs.get(n) is None else ptrs[n].data_ptr() for n in names]
    err = cpu_kernel.load().zoo_selective_scan(kind, *args, *shapes, CHECKPOINT_EVERY, block, threads)
    if err:
        raise MemoryError("zoo-kernels: the fused selective scan could not allocate its scratch buffers")


#: Cap on the backward's per-thread scratch (a chunk's states and decays, (2K + 1) x N x block).
SCRATCH_BYTES = 8 << 20


def _plan(u: Tensor, N: int) -> Tuple[int, int]:
    b, T, D = u.shape
    threads = torch.get_num_threads() if u.numel() >= cpu_kernel.PARALLEL_MIN else 1
    fits = SCRATCH_BYTES // ((2 * CHECKPOINT_EVERY + 1) * N * u.element_size())
    return threads, min(cpu_kernel._block(b, D, threads), max(16, fits // 16 * 16))


@torch.library.custom_op("zoo_kernels::selective_scan_fused", mutates_args=())
def _fused_op(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
              h0: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    b, T, D = u.shape
    N = A.shape[1]
    y, hl = torch.empty_like(u), u.new_empty(b, D, N)
    ck = u.new_empty(b, -(-T // CHECKPOINT_EVERY), D, N)
    threads, block = _plan(u, N)
    _call(1 if u.dtype == torch.float64 else 0, threads, block, (b, T, D, N),
          u=u, dt=dt, A=A, B=B, C=C, h0=h0, y=y, hl=hl, ck=ck)
    return y, hl, ck


@_fused_op.register_fake
def _(u, dt, A, B, C, h0):
    b, T, D = u.shape
    N = A.shape[1]
    return u.new_empty(u.shape), u.new_empty(b, D, N), u.new_empty(b, -(-T // CHECKPOINT_EVERY), D, N)


@torch.library.custom_op("zoo_kernels::selective_scan_fused_backward", mutates_args=())
def _fused_bwd_op(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, ck: Tensor, gy: Tensor,
                  ghl: Tensor, want_dh0: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    b, T, D = u.shape
    N = A.shape[1]
    threads, block = _plan(u, N)
    blocks = -(-D // block)
    du, ddt = torch.empty_like(u), torch.empty_like(u)
    dA = u.new_empty(b, D, N)              # per batch row, summed below
    dB, dC = u.new_empty(blocks, b, T, N), u.new_empty(blocks, b, T, N)  # per channel block
    dh0 = u.new_empty(b, D, N) if want_dh0 else u.new_empty(0)
    _call(3 if u.dtype == torch.float64 else 2, threads, block, (b, T, D, N),
          u=u, dt=dt, A=A, B=B, C=C, gy=gy, ghl=ghl, ck_in=ck, du=du, ddt=ddt, dA=dA, dB=dB, dC=dC,
          dh0=dh0 if want_dh0 else None)
    return du, ddt, dA.sum(0), dB.sum(0), dC.sum(0), dh0


@_fused_bwd_op.register_fake
def _(u, dt, A, B, C, ck, gy, ghl, want_dh0):
    b, T, D = u.shape
    N = A.shape[1]
    return (u.new_empty(u.shape), u.new_empty(u.shape), u.new_empty(D, N), u.new_empty(b, T, N),
            u.new_empty(b, T, N), u.new_empty(b, D, N) if want_dh0 else u.new_empty(0))


def _fused_setup(ctx, inputs, output):
    u, dt, A, B, C, h0 = inputs
    ctx.save_for_backward(u, dt, A, B, C, output[2])
    ctx.has_h0 = h0 is not None


def _fused_backward(ctx, gy, ghl, _gck):
    u, dt, A, B, C, ck = ctx.saved_tensors
    gy = torch.zeros_like(u) if gy is None else gy.contiguous()
    ghl = torch.zeros(u.shape[0], A.shape[0], A.shape[1], dtype=u.dtype) if ghl is None else ghl.contiguous()
    du, ddt, dA, dB, dC, dh0 = _fused_bwd_op(u, dt, A, B, C, ck, gy, ghl, ctx.has_h0)
    return du, ddt, dA, dB, dC, (dh0 if ctx.has_h0 else None)


_fused_op.register_autograd(_fused_backward, setup_context=_fused_setup)


def fused_usable(u: Tensor) -> bool:
    return u.device.type == "cpu" and cpu_kernel.enabled() and cpu_kernel.load() is not None


def selective_scan_fused(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    acc = acc_dtype(u)
    args = [t.to(acc).contiguous() for t in (u, dt, A, B, C)]
    y, hl, _ = _fused_op(*args, None if h0 is None else h0.to(acc).contiguous())
    return y.to(u.dtype), hl


# ---- the fused Triton kernels as custom ops (triton imported only when they run) ----

def _ts():
    if not triton_installed():
        raise RuntimeError("backend 'triton' requested but triton is not installed")
    from . import triton_selective
    return triton_selective


@torch.library.custom_op("zoo_kernels::selective_scan_triton", mutates_args=())
def _triton_op(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
               h0: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    return _ts().selective_scan_fwd(u, dt, A, B, C, h0)


@_triton_op.register_fake
def _(u, dt, A, B, C, h0):
    b, T, D = u.shape
    N = A.shape[1]
    return (u.new_empty(u.shape), u.new_empty((b, D, N), dtype=acc_dtype(u)),
            u.new_empty((b, _ts().n_tiles(T), D, N), dtype=torch.float32))


@torch.library.custom_op("zoo_kernels::selective_scan_triton_backward", mutates_args=())
def _triton_bwd_op(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, ck: Tensor, gy: Tensor,
                   ghl: Tensor, want_dh0: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _ts().selective_scan_bwd(u, dt, A, B, C, ck, gy, ghl, want_dh0)


@_triton_bwd_op.register_fake
def _(u, dt, A, B, C, ck, gy, ghl, want_dh0):
    b, T, D = u.shape
    N = A.shape[1]
    return (u.new_empty(u.shape), dt.new_empty(dt.shape), A.new_empty(A.shape), B.new_empty(B.shape),
            C.new_empty(C.shape), u.new_empty((b, D, N) if want_dh0 else (0,), dtype=torch.float32))


def _triton_setup(ctx, inputs, output):
    u, dt, A, B, C, h0 = inputs
    ctx.save_for_backward(u, dt, A, B, C, output[2])
    ctx.h0_dtype = None if h0 is None else h0.dtype


def _triton_backward(ctx, gy, ghl, _gck):
    u, dt, A, B, C, ck = ctx.saved_tensors
    b, _, D = u.shape
    if gy is None:
        gy = torch.zeros_like(u)
    if ghl is None:
        ghl = torch.zeros((b, D, A.shape[1]), dtype=torch.float32, device=u.device)
    want_dh0 = ctx.h0_dtype is not None and ctx.needs_input_grad[5]
    du, ddt, dA, dB, dC, dh0 = _triton_bwd_op(u, dt, A, B, C, ck, gy, ghl, want_dh0)
    return du, ddt, dA, dB, dC, (dh0.to(ctx.h0_dtype) if want_dh0 else None)


_triton_op.register_autograd(_triton_backward, setup_context=_triton_setup)


@torch.compiler.assume_constant_result
def _triton_refusal(N: int) -> str:
    """Why the fused Triton kernels refuse a state of size N ('' if they take it). torch.compile
    runs it once while tracing (it imports triton, which dynamo must not trace)."""
    return _ts().unsupported(N) or ""


def selective_scan_triton(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                          h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The fused Triton path (CUDA tensors; CPU tensors under TRITON_INTERPRET=1). Any strides and
    float dtypes; computes in float32."""
    y, hl, _ = _triton_op(u, dt, A, B, C, h0)
    return y, hl


def selective_scan(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The selective scan on the best path for u's device (see the module docstring).

    ZOO_KERNELS=naive forces the loop; ZOO_KERNELS_CPP=0 (or no C compiler)
    gives the flat path on CPU. The triton backend (the default for CUDA
    tensors) takes the fused Triton kernels, and the flat path, with a
    warning, for a shape they refuse.
    """
    b, T, D = u.shape
    if dt.shape != u.shape or A.dim() != 2 or A.shape[0] != D or B.shape != (b, T, A.shape[1]) \
            or C.shape != B.shape or (h0 is not None and h0.shape != (b, D, A.shape[1])) or T < 1:
        raise ValueError(f"selective_scan: expected u, dt (b, T, D), A (D, N), B, C (b, T, N), h0 (b, D, N) "
                         f"with T >= 1; got u {tuple(u.shape)}, dt {tuple(dt.shape)}, A {tuple(A.shape)}, "
                         f"B {tuple(B.shape)}, C {tuple(C.shape)}, h0 {None if h0 is None else tuple(h0.shape)}")
    backend = select(u)
    if backend == "naive":
        return selective_scan_naive(u, dt, A, B, C, h0)
    if backend == "torch" and fused_usable(u):
        return selective_scan_fused(u, dt, A, B, C, h0)
    if backend == "triton":
        why = _triton_refusal(A.shape[1])
        if not why:
            if torch.compiler.is_compiling():  # a launch error cannot be caught inside a compiled graph
                return selective_scan_triton(u, dt, A, B, C, h0)
            try:
                return selective_scan_triton(u, dt, A, B, C, h0)
            except _ts().LAUNCH_ERRORS as err:
                why = f"{type(err).__name__}: {err}"
        warnings.warn(f"zoo_kernels.selective_scan: the fused Triton kernel cannot take this call ({why}); "
                      "falling back to the flat path, which materialises (batch, T, D, N) tensors", stacklevel=2)
    return selective_scan_flat(u, dt, A, B, C, h0)
