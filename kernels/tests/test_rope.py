"""RoPE's one-pass rotation (rope/rotary.c) against the equation (rope/naive.py): float64 values
and gradients with strided input and partial rotation, float32 and bfloat16 within their rounding."""

from __future__ import annotations

import pytest
import torch

from zoo_kernels import cbuild
from zoo_kernels.rope import cpu, rotary

pytestmark = pytest.mark.skipif(not cbuild.available(), reason=f"no C kernels: {cbuild.why_unavailable()}")


def _case(dtype, D=8, R=8, seed=0):
    """x as the attention mixer passes k: a strided view (B, T, H, D) of a wider projection."""
    torch.manual_seed(seed)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    x = torch.randn(2, 5, 2, 3, D, dtype=dtype).unbind(2)[1].detach().requires_grad_()
    angles = 10 * torch.randn(2, 5, R // 2, dtype=work)
    return x, angles.cos(), angles.sin()


@pytest.mark.parametrize("D,R", [(8, 8), (8, 4), (16, 2)])
def test_float64_equals_the_equation(D, R):
    x, cos, sin = _case(torch.float64, D, R)
    assert x.stride(-1) == 1 and not x.is_contiguous()
    y, ref = rotary(x, cos, sin), rotary(x, cos, sin, backend="naive")
    g = torch.randn_like(ref)
    torch.testing.assert_close(y, ref, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(
        torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0], rtol=1e-14, atol=1e-14
    )
    assert torch.autograd.gradcheck(lambda t: rotary(t, cos, sin), (x,))


def test_rotation_keeps_norms_and_inverts():
    x, cos, sin = _case(torch.float64, 8, 8, seed=1)
    y = rotary(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rotary(y, cos, -sin), x.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float32_and_bfloat16_within_their_rounding(dtype):
    x, cos, sin = _case(dtype, 64, 64, seed=2)
    x64 = x.detach().double().requires_grad_()
    y, ref = rotary(x, cos, sin), rotary(x64, cos.double(), sin.double(), backend="naive")
    assert y.dtype == dtype
    tol = 2**-7 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol)
    g = torch.randn(y.shape, dtype=dtype)
    (d,) = torch.autograd.grad(y, x, g)
    (dref,) = torch.autograd.grad(ref, x64, g.double())
    torch.testing.assert_close(d.double(), dref, rtol=tol, atol=tol)


def test_what_does_not_fit_says_so_and_other_cases_take_the_reference(monkeypatch):
    x, cos, sin = _case(torch.float32, 8, 8)
    with pytest.raises(ValueError, match="do not fit"):
        rotary(x, cos[:, :4], sin[:, :4])
    assert not cpu.usable(x.detach().half(), cos)
    monkeypatch.setenv("ZOO_KERNELS_CPP", "0")
    assert not cpu.usable(x, cos)
    torch.testing.assert_close(rotary(x, cos, sin), rotary(x, cos, sin, backend="naive"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_heads_first_is_the_same_rotation_laid_out_for_attention(dtype):
    x, cos, sin = _case(dtype, 8, 8, seed=3)
    y = rotary(x, cos, sin, heads_first=True)
    assert y.shape == (2, 3, 5, 8) and y.is_contiguous()
    ref = rotary(x, cos, sin, backend="naive").transpose(1, 2)
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-13)
    g = torch.randn(y.shape, dtype=dtype)
    torch.testing.assert_close(
        torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0], rtol=1e-14, atol=1e-14
    )
