"""linear_scan (torch and triton paths) against the float64 naive loop: outputs and all grads."""

import pytest
import torch
from scan_checks import BF16_TOL, DEVICE, FP32_TOL, compare, lengths, shape

import zoo_kernels
from zoo_kernels.backends import triton_installed
from zoo_kernels.scan import naive

REGIMES = {
    "mixed": lambda u: u,  # decays spread over (0, 1)
    "near0": lambda u: u * 1e-3,
    "near1": lambda u: 1 - u * 1e-3,
}


def make(backend, length, regime, with_h0, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, t, d = shape(backend, length)
    inputs = {
        "a": REGIMES[regime](torch.rand(b, t, d, generator=gen)),
        "x": torch.randn(b, t, d, generator=gen),
        "h0": torch.randn(b, d, generator=gen) if with_h0 else None,
    }
    return {k: (v.to(DEVICE, dtype) if v is not None else None) for k, v in inputs.items()}


def fast(backend):
    return lambda a, x, h0: zoo_kernels.linear_scan(a, x, h0, backend=backend)


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_naive_fp32(backend, regime, with_h0):
    for length in lengths(backend):
        compare(fast(backend), naive.linear_scan, make(backend, length, regime, with_h0), FP32_TOL)


@pytest.mark.parametrize("with_h0", [False, True])
def test_noncontiguous_inputs(backend, with_h0):
    compare(fast(backend), naive.linear_scan, make(backend, 33, "mixed", with_h0), FP32_TOL, noncontiguous=True)


@pytest.mark.parametrize("regime", ["mixed", "near1"])
def test_bf16_inputs(backend, regime):
    inputs = make(backend, 64 if backend == "triton" else 100, regime, True, dtype=torch.bfloat16)
    compare(fast(backend), naive.linear_scan, inputs, BF16_TOL)


def test_output_dtypes(backend):
    inputs = make(backend, 7, "mixed", True, dtype=torch.bfloat16)
    h, h_last = zoo_kernels.linear_scan(**inputs, backend=backend)
    assert h.dtype == torch.bfloat16 and h_last.dtype == torch.float32
    assert h.shape == inputs["x"].shape and h_last.shape == inputs["h0"].shape


@pytest.mark.skipif(not triton_installed(), reason="triton is not importable")
def test_triton_state_carried_across_tiles(monkeypatch):
    """Several time tiles, the last one partial: the carry between tiles is exercised."""
    from zoo_kernels.scan import triton as triton_scan

    monkeypatch.setattr(triton_scan, "BLOCK_T", 16)
    for with_h0 in (False, True):
        compare(fast("triton"), naive.linear_scan, make("triton", 50, "mixed", with_h0), FP32_TOL)
