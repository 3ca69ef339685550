"""Document resets (issue #27) in Mamba-1's selective scan and Mamba-2's SSD, on every path.

A row of packed documents must give, in float64, the outputs, final state and gradients
(of every input, h0 included) of each document run alone: the first document of a row
continues the incoming state h0 unless the row starts with a reset, every other one starts
from zero. Both sides run on the same leaves, so one autograd call compares the gradients.
Also: naive == fast with resets, and resets=None keeps its results.

The Triton kernels run under TRITON_INTERPRET=1 without a GPU (conftest.py), at tiny shapes;
the selective scan's Triton kernels compute in float32 (FP32_TOL), the SSD's in float64.
"""

import pytest
import torch
import torch.nn.functional as F
from scan_checks import DEVICE, FP32_TOL, NO_TRITON

from zoo_kernels import cbuild
from zoo_kernels.backends import triton_installed
from zoo_kernels.selective import (
    selective_scan_flat,
    selective_scan_fused,
    selective_scan_naive,
    selective_scan_triton,
)
from zoo_kernels.ssd import ssd_chunked, ssd_naive, ssd_scan, ssd_triton

needs_kernel = pytest.mark.skipif(not cbuild.available(), reason="compiled CPU kernel not built here")
needs_triton = pytest.mark.skipif(not triton_installed(), reason=NO_TRITON)

# Document lengths per row. Row 0 continues h0 (no reset at t=0) and has a length-1 document;
# row 1 starts a document at t=0 and has two length-1 documents in a row.
# Each row ends with a short document (the returned state is the one inside it).
ROWS = [[5, 1, 13, 20, 1], [7, 1, 1, 29, 2]]
ROWS_SHORT = [[3, 1, 5, 1], [2, 1, 1, 6]]  # for the Triton interpreter


def starts(rows, continues=(True, False)) -> torch.Tensor:
    T = sum(rows[0])
    resets = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, lens in enumerate(rows):
        assert sum(lens) == T
        pos = 0
        for j, n in enumerate(lens):
            resets[i, pos] = not (j == 0 and continues[i])
            pos += n
    return resets


def segments(resets: torch.Tensor):
    """(row, start, end, continues) of every document."""
    out = []
    for i in range(resets.shape[0]):
        cut = [0] + [t for t in range(1, resets.shape[1]) if resets[i, t]] + [resets.shape[1]]
        for j in range(len(cut) - 1):
            out.append((i, cut[j], cut[j + 1], j == 0 and not bool(resets[i, 0])))
    return out


def packed_vs_separate(fn, seqs, A, h0, resets, tol):
    """fn(*seqs, A, h0, resets) -> (y, h_T): packed rows against every document alone."""
    seqs = [s.detach().to(DEVICE).requires_grad_() for s in seqs]
    A = A.detach().to(DEVICE).requires_grad_()
    h0 = h0.detach().to(DEVICE).requires_grad_()
    resets = resets.to(DEVICE)
    leaves = [*seqs, A, h0]
    y, h = fn(*seqs, A, h0, resets)
    g = torch.Generator().manual_seed(7)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(DEVICE)
    wh = torch.randn(h.shape, generator=g, dtype=torch.float64).to(DEVICE)
    loss = (y.double() * wy).sum() + (h.double() * wh).sum()
    got = [y, h, *torch.autograd.grad(loss, leaves)]

    ys, hs, loss2 = [], [None] * y.shape[0], 0
    for row, t0, t1, cont in segments(resets.cpu()):
        part = [s[row : row + 1, t0:t1] for s in seqs]
        yi, hi = fn(*part, A, h0[row : row + 1] if cont else None, None)
        ys.append((row, yi))
        loss2 = loss2 + (yi.double() * wy[row : row + 1, t0:t1]).sum()
        hs[row] = hi  # the last document's final state
    y2 = torch.cat([torch.cat([yi for r, yi in ys if r == row], 1) for row in range(y.shape[0])], 0)
    h2 = torch.cat(hs, 0)
    loss2 = loss2 + (h2.double() * wh).sum()
    want = [y2, h2, *torch.autograd.grad(loss2, leaves, allow_unused=True)]
    want = [torch.zeros_like(leaf) if w is None else w for w, leaf in zip(want, [y, h, *leaves])]
    names = ["y", "h_T"] + [f"d{k}" for k in range(len(seqs))] + ["dA", "dh0"]
    for name, a, w in zip(names, got, want):
        assert torch.isfinite(a).all(), f"{name} has inf/NaN"
        err = ((a.double() - w.double()).norm() / w.double().norm().clamp_min(1e-300)).item()
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"
    assert got[-1][1].abs().sum() == 0, "dh0 of a row that starts with a reset must be 0"
    return got


# ---- Mamba-1: the selective scan -----------------------------------------------------------


def selective_inputs(rows, D=6, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    b, T = len(rows), sum(rows[0])
    seqs = [r(b, T, D), F.softplus(r(b, T, D)), r(b, T, N), r(b, T, N)]  # u, dt, B, C
    return seqs, -torch.exp(r(D, N)), r(b, D, N), starts(rows)


def selective(path):
    def fn(u, dt, B, C, A, h0, resets):
        return path(u, dt, A, B, C, h0, resets)

    return fn


@pytest.mark.parametrize(
    "path", [selective_scan_naive, pytest.param(selective_scan_fused, marks=needs_kernel), selective_scan_flat]
)
def test_selective_packed_equals_separate(path):
    seqs, A, h0, resets = selective_inputs(ROWS)
    packed_vs_separate(selective(path), seqs, A, h0, resets, 1e-12)


@pytest.mark.parametrize("path", [pytest.param(selective_scan_fused, marks=needs_kernel), selective_scan_flat])
@pytest.mark.parametrize("D", [6, 100])  # 100: several channel blocks of the fused kernel
def test_selective_fast_matches_naive_with_resets(path, D):
    seqs, A, h0, resets = selective_inputs(ROWS, D=D)
    y, h = path(seqs[0], seqs[1], A, seqs[2], seqs[3], h0, resets)
    y0, h0_ = selective_scan_naive(seqs[0], seqs[1], A, seqs[2], seqs[3], h0, resets)
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h0_, rtol=1e-12, atol=1e-12)


@needs_kernel
def test_selective_fused_float32_with_resets():
    seqs, A, h0, resets = selective_inputs(ROWS)
    f = [t.float() for t in seqs]
    y, h = selective_scan_fused(f[0], f[1], A.float(), f[2], f[3], h0.float(), resets)
    y0, h0_ = selective_scan_naive(*[t.double() for t in (f[0], f[1], A.float(), f[2], f[3], h0.float())], resets)
    assert ((y.double() - y0).norm() / y0.norm()).item() < FP32_TOL
    assert ((h.double() - h0_).norm() / h0_.norm()).item() < FP32_TOL


@needs_triton
def test_selective_triton_packed_equals_separate(monkeypatch):
    from zoo_kernels.selective import triton as kernels

    monkeypatch.setattr(kernels, "BLOCK_T", 4)  # documents straddle tiles; one starts a tile
    monkeypatch.setattr(kernels, "BLOCK_D", 4)
    seqs, A, h0, resets = selective_inputs(ROWS_SHORT, D=5, N=3)
    packed_vs_separate(selective(selective_scan_triton), seqs, A, h0, resets, FP32_TOL)


# ---- Mamba-2: the SSD scan -----------------------------------------------------------------


def ssd_inputs(rows, H=4, P=3, G=2, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    b, T = len(rows), sum(rows[0])
    seqs = [r(b, T, H, P), F.softplus(r(b, T, H)), r(b, T, G, N), r(b, T, G, N)]  # x, dt, B, C
    return seqs, -torch.exp(r(H)), r(b, H, P, N), starts(rows)


def ssd(path, chunk_size=None):
    def fn(x, dt, B, C, A, h0, resets):
        if chunk_size is None:
            return path(x, dt, A, B, C, h0, resets)
        return path(x, dt, A, B, C, chunk_size, h0, resets)

    return fn


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 7, 16, 64])  # None: the naive loop
def test_ssd_packed_equals_separate(chunk_size):
    """Chunks of 4 and 7 put several starts in one chunk, a start on a chunk's first and last
    position and documents across chunks; 64 is one chunk longer than the rows."""
    seqs, A, h0, resets = ssd_inputs(ROWS)
    fn = ssd(ssd_naive) if chunk_size is None else ssd(ssd_chunked, chunk_size)
    packed_vs_separate(fn, seqs, A, h0, resets, 1e-12)


@pytest.mark.parametrize("chunk_size", [3, 8])
def test_ssd_chunked_matches_naive_with_resets(chunk_size):
    seqs, A, h0, resets = ssd_inputs(ROWS, seed=3)
    x, dt, B, C = seqs
    y, h = ssd_scan(x, dt, A, B, C, chunk_size, h0, backend="torch", resets=resets)
    y0, h0_ = ssd_scan(x, dt, A, B, C, chunk_size, h0, backend="naive", resets=resets)
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h0_, rtol=1e-12, atol=1e-12)


def test_ssd_chunked_extreme_decays_with_resets():
    """Decays that underflow to 0 and starts in every chunk: no NaN from (-inf) - (-inf)."""
    seqs, A, h0, resets = ssd_inputs(ROWS)
    seqs[1] = seqs[1] * 1e4
    packed_vs_separate(ssd(ssd_chunked, 4), seqs, A, h0, resets, 1e-12)


@needs_triton
@pytest.mark.parametrize("chunk_size", [3, 4])
def test_ssd_triton_packed_equals_separate(chunk_size):
    seqs, A, h0, resets = ssd_inputs(ROWS_SHORT, H=2, P=3, G=1, N=3)
    packed_vs_separate(ssd(ssd_triton, chunk_size), seqs, A, h0, resets, 1e-10)


def test_no_resets_keeps_the_results():
    """resets of all False equal resets=None (which keeps the old code path)."""
    seqs, A, h0, _ = ssd_inputs(ROWS)
    x, dt, B, C = seqs
    none = torch.zeros(x.shape[:2], dtype=torch.bool)
    for backend in ("naive", "torch"):
        a = ssd_scan(x, dt, A, B, C, 4, h0, backend=backend)
        b = ssd_scan(x, dt, A, B, C, 4, h0, backend=backend, resets=none)
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    seqs, A, h0, _ = selective_inputs(ROWS)
    u, dt, B, C = seqs
    for fn in (selective_scan_naive, selective_scan_flat) + ((selective_scan_fused,) if cbuild.available() else ()):
        torch.testing.assert_close(fn(u, dt, A, B, C, h0), fn(u, dt, A, B, C, h0, none), rtol=1e-13, atol=1e-13)


@needs_kernel
def test_selective_custom_op_with_resets_passes_opcheck():
    from zoo_kernels.selective import _fused_op

    seqs, A, h0, resets = selective_inputs(ROWS)
    u, dt, B, C = (t.float() for t in seqs)
    torch.library.opcheck(_fused_op.op, (u, dt, A.float(), B, C, h0.float(), resets))


@needs_triton
def test_ssd_triton_custom_ops_with_resets_pass_opcheck():
    from zoo_kernels.ssd import _ssd_bwd_op, _ssd_op

    seqs, A, h0, resets = ssd_inputs(ROWS_SHORT, H=2, P=3, G=1, N=3)
    x, dt, B, C = seqs
    torch.library.opcheck(_ssd_op.op, (x, dt, A, B, C, 4, h0, resets))
    gy, gh = torch.randn_like(x), torch.randn_like(h0)
    torch.library.opcheck(_ssd_bwd_op.op, ([x, dt, A, B, C, h0, resets], 4, gy, gh))
