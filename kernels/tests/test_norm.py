"""The fused RMSNorm (norm/rms_norm.c) against the equation (norm/naive.py): float64 values and
gradients, float32 within its rounding, bfloat16 output rounded once, thread-count independence."""

from __future__ import annotations

import pytest
import torch

from zoo_kernels import cbuild
from zoo_kernels.norm import cpu, rms_norm

pytestmark = pytest.mark.skipif(not cbuild.available(), reason=f"no C kernels: {cbuild.why_unavailable()}")


def _inputs(shape, dtype, seed=0):
    torch.manual_seed(seed)
    x = (2 * torch.randn(shape, dtype=dtype)).requires_grad_()
    w = (torch.rand(shape[-1], dtype=dtype) + 0.5).requires_grad_()
    return x, w


@pytest.mark.parametrize("shape", [(3, 70, 96), (5, 33), (2, 3, 4, 17), (1, 1, 256)])
def test_float64_equals_the_equation(shape):
    x, w = _inputs(shape, torch.float64)
    y, ref = rms_norm(x, w, 1e-5), rms_norm(x, w, 1e-5, backend="naive")
    g = torch.randn_like(ref)
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-13)
    for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    x, w = _inputs((4, 9, 12), torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: rms_norm(a, b, 1e-5), (x, w))


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_float32_and_bfloat16_output_within_their_rounding(out_dtype):
    x, w = _inputs((8, 128, 256), torch.float32, seed=1)
    x64, w64 = (t.detach().double().requires_grad_() for t in (x, w))
    y, ref = rms_norm(x, w, 1e-5, out_dtype), rms_norm(x64, w64, 1e-5, backend="naive")
    assert y.dtype == out_dtype
    if out_dtype == torch.bfloat16:  # the float32 result rounded to nearest even once
        assert ((y.double() - ref).abs() <= ref.abs() * 2**-8 + 1e-30).all()
    else:
        torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-6)
    g = torch.randn(y.shape, dtype=out_dtype)
    ours = torch.autograd.grad(y, (x, w), g)
    exact = torch.autograd.grad(ref, (x64, w64), g.double())
    assert ours[0].dtype == torch.float32 and ours[1].dtype == torch.float32
    for a, b in zip(ours, exact):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


def test_the_result_does_not_depend_on_the_thread_count(monkeypatch):
    x, w = _inputs((16, 256, 128), torch.float32, seed=2)
    g = torch.randn(16, 256, 128)
    runs = []
    for n in (1, 2, 3):
        monkeypatch.setattr(cbuild, "threads", lambda numel, n=n: n)
        y = rms_norm(x, w, 1e-5)
        runs.append((y, *torch.autograd.grad(y, (x, w), g)))
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))


def test_other_dtypes_take_the_reference(monkeypatch):
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    assert not cpu.usable(x, torch.ones(8, dtype=torch.bfloat16), torch.bfloat16)
    torch.testing.assert_close(
        rms_norm(x, torch.ones(8, dtype=torch.bfloat16)), rms_norm(x, torch.ones(8), backend="naive").bfloat16()
    )
    monkeypatch.setenv("ZOO_KERNELS_CPP", "0")
    assert not cpu.usable(x.float(), torch.ones(8), torch.float32)


def test_one_node_under_torch_compile():
    torch._dynamo.reset()
    x, w = _inputs((4, 6, 8), torch.float64)
    fn = torch.compile(lambda a, b: rms_norm(a, b, 1e-5).square().sum(), backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(fn(x, w), (x, w))
    want = torch.autograd.grad(rms_norm(x, w, 1e-5, backend="naive").square().sum(), (x, w))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_outputs_are_tensors_of_their_own():
    """Not views (FSDP2 warns when a wrapped module returns one; custom ops' outputs should be fresh)."""
    x, w = _inputs((2, 3, 8), torch.float32)
    y = rms_norm(x, w, 1e-5, torch.bfloat16)
    assert not y._is_view()
    assert not torch.autograd.grad(y.float().sum(), x)[0]._is_view()
