"""The bf16 outputs of the fused CPU layers are their own float32 results rounded by torch's
float -> bfloat16 conversion (round to nearest even), at every position of a row: widths that
end in a partial 16-value group and rows longer than the kernels' float32 chunks, so the
CPU's vector conversion (bf16.h's bf16_store_row, AVX512-BF16 where present), its masked tail
and the per-value fallback are all held to the same outside rounding."""

from __future__ import annotations

import pytest
import torch

from zoo_kernels import cbuild, glu, rms_norm, rotary

pytestmark = pytest.mark.skipif(not cbuild.available(), reason=f"no C kernels: {cbuild.why_unavailable()}")

WIDTHS = [1, 17, 300, 515]  # one value; a partial group; past one 256-value chunk; past two


@pytest.mark.parametrize("n", WIDTHS)
def test_norm_bf16_output_is_its_float32_output_rounded_by_torch(n):
    torch.manual_seed(n)
    x, w = 3 * torch.randn(7, n), torch.rand(n) + 0.5
    y16, y32 = rms_norm(x, w, 1e-5, torch.bfloat16), rms_norm(x, w, 1e-5, torch.float32)
    assert torch.equal(y16, y32.bfloat16())


@pytest.mark.parametrize("n", WIDTHS)
def test_glu_bf16_output_is_its_float32_result_rounded_by_torch(n):
    torch.manual_seed(n)
    h = (3 * torch.randn(5, 2 * n)).bfloat16()
    y16, y32 = glu(h, "silu"), glu(h.float(), "silu")  # the same float32 arithmetic on the same inputs
    ref = y32.bfloat16()
    assert ((y16.float() - ref.float()).abs() <= ref.float().abs() * 2**-7).all()
    assert (y16 == ref).float().mean() > 0.999
    g = torch.randn(y16.shape).bfloat16()
    (d16,) = torch.autograd.grad(glu(h.requires_grad_(), "silu"), h, g)
    h32 = h.detach().float().requires_grad_()
    (d32,) = torch.autograd.grad(glu(h32, "silu"), h32, g.float())
    dref = d32.bfloat16()
    assert ((d16.float() - dref.float()).abs() <= dref.float().abs() * 2**-7).all()
    assert (d16 == dref).float().mean() > 0.999


@pytest.mark.parametrize("D", [6, 34, 260])  # 3, 17 and 130 pairs: partial groups, past a 128-pair chunk
def test_rotary_bf16_output_is_its_float32_result_rounded_by_torch(D):
    torch.manual_seed(D)
    x = torch.randn(2, 5, 3, D).bfloat16()
    angles = 10 * torch.randn(2, 5, D // 2)
    cos, sin = angles.cos(), angles.sin()
    y16, y32 = rotary(x, cos, sin), rotary(x.float(), cos, sin)
    ref = y32.bfloat16()
    assert ((y16.float() - ref.float()).abs() <= ref.float().abs() * 2**-7 + 1e-30).all()
    assert (y16 == ref).float().mean() > 0.999
