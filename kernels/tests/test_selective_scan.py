"""Mamba-1's selective scan: the fused CPU kernel and the flat linear_scan path against the float64 loop.

Lengths straddle the fused kernel's checkpoint interval (32); batch 1 splits
channels into blocks across threads, so the per-block dB/dC partial sums run.
"""

import pytest
import torch
import torch.nn.functional as F

import zoo_kernels
from zoo_kernels import cbuild
from zoo_kernels.selective import _fused_op, selective_scan_flat, selective_scan_fused, selective_scan_naive
from zoo_kernels.selective.cpu import CHECKPOINT_EVERY

needs_kernel = pytest.mark.skipif(
    not cbuild.available(), reason=f"compiled CPU kernel not built here: {cbuild.why_unavailable()}"
)
PATHS = {"fused": selective_scan_fused, "flat": selective_scan_flat}


def inputs(b, T, D, N, with_h0, seed=0, decay_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    dt = F.softplus(r(b, T, D)) * decay_scale
    A = -torch.exp(r(D, N))
    return [r(b, T, D), dt, A, r(b, T, N), r(b, T, N), r(b, D, N) if with_h0 else None]


def outputs_and_grads(fn, args, dtype):
    leaves = [None if t is None else t.detach().to(dtype).requires_grad_() for t in args]
    y, h = fn(*leaves)
    g = torch.Generator().manual_seed(1)
    wy, wh = (torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, h))
    loss = (y.double() * wy).sum() + (h.double() * wh).sum()
    used = [t for t in leaves if t is not None]
    return [y, h, *torch.autograd.grad(loss, used)]


def rel(a, b):
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("path", [pytest.param("fused", marks=needs_kernel), "flat"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize(
    "b,T,D,N", [(2, 1, 6, 4), (2, 31, 6, 4), (3, 33, 24, 16), (1, 70, 100, 5), (2, 2 * CHECKPOINT_EVERY, 8, 3)]
)
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_the_loop_with_gradients(path, dtype, tol, b, T, D, N, with_h0):
    args = inputs(b, T, D, N, with_h0)
    got = outputs_and_grads(PATHS[path], args, dtype)
    want = outputs_and_grads(selective_scan_naive, args, torch.float64)
    names = ["y", "h_last", "u", "dt", "A", "B", "C", "h0"]
    for name, a, w in zip(names, got, want):
        assert rel(a, w) < tol, name


@needs_kernel
@pytest.mark.parametrize("decay_scale", [1e-4, 50.0])  # decays close to 1, and underflowing to 0
def test_extreme_decays(decay_scale):
    args = inputs(2, 40, 16, 8, True, decay_scale=decay_scale)
    got = outputs_and_grads(selective_scan_fused, args, torch.float32)
    want = outputs_and_grads(selective_scan_naive, args, torch.float64)
    for a, w in zip(got, want):
        assert torch.isfinite(a).all() and rel(a, w) < 1e-5


@needs_kernel
def test_noncontiguous_inputs_and_thread_counts_agree():
    u, dt, A, B, C, h0 = (t.float() for t in inputs(1, 50, 40, 16, True))
    ref = selective_scan_fused(u, dt, A, B, C, h0)
    strided = [t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (u, dt, A, B, C, h0)]
    assert not strided[0].is_contiguous()
    got = selective_scan_fused(*strided)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    old = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            y, h = selective_scan_fused(u, dt, A, B, C, h0)
            assert torch.equal(y, ref[0]) and torch.equal(h, ref[1])
    finally:
        torch.set_num_threads(old)


@needs_kernel
def test_scratch_cap_splits_channel_blocks(monkeypatch):
    """A large N * D caps the channel block (the backward's scratch); the blocks' dB/dC partials still sum right."""
    import zoo_kernels.selective.cpu as ss

    monkeypatch.setattr(ss, "SCRATCH_BYTES", (2 * CHECKPOINT_EVERY + 1) * 6 * 8 * 20)  # 20 channels of N=6 in f64
    args = inputs(3, 45, 40, 6, True)
    assert ss._plan(args[0], 6)[1] == 16  # three blocks, the last one partial
    got = outputs_and_grads(selective_scan_fused, args, torch.float64)
    want = outputs_and_grads(selective_scan_naive, args, torch.float64)
    for a, w in zip(got, want):
        assert rel(a, w) < 1e-12


def test_dispatch_and_fallback(monkeypatch):
    """CPU tensors take the fused kernel; ZOO_KERNELS_CPP=0 gives the flat path; both agree."""
    args = [None if t is None else t.float() for t in inputs(2, 20, 8, 4, True)]
    calls = []
    import zoo_kernels.selective as ss

    for name in ("selective_scan_fused", "selective_scan_flat"):
        real = getattr(ss, name)
        monkeypatch.setattr(ss, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    expected_first = "selective_scan_fused" if cbuild.available() else "selective_scan_flat"
    y1, _ = zoo_kernels.selective_scan(*args)
    monkeypatch.setenv("ZOO_KERNELS_CPP", "0")
    y2, _ = zoo_kernels.selective_scan(*args)
    assert calls == [expected_first, "selective_scan_flat"]
    assert rel(y1, y2.double()) < 1e-5
    monkeypatch.setenv("ZOO_KERNELS", "naive")
    y3, _ = zoo_kernels.selective_scan(*args)
    assert rel(y3, y2.double()) < 1e-5 and len(calls) == 2


def test_bad_shapes_name_them():
    u = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"A \(D, N\)"):
        zoo_kernels.selective_scan(u, u, torch.randn(3, 2), torch.randn(2, 5, 2), torch.randn(2, 5, 2))


@needs_kernel
def test_custom_op_registration_and_compile():
    u, dt, A, B, C, h0 = (t.float() for t in inputs(2, 9, 8, 4, True))
    torch.library.opcheck(_fused_op.op, (u, dt, A, B, C, h0))
    eager = selective_scan_fused(u, dt, A, B, C, h0)
    compiled = torch.compile(selective_scan_fused, fullgraph=True, backend="aot_eager")(u, dt, A, B, C, h0)
    assert torch.allclose(eager[0], compiled[0]) and torch.allclose(eager[1], compiled[1])
