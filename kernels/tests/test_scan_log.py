"""log_linear_scan (torch and triton paths) against the float64 naive loop: outputs and all grads."""

import math

import pytest
import torch
from scan_checks import BF16_TOL, DEVICE, FP32_TOL, compare, lengths, shape

import zoo_kernels
from zoo_kernels.scan import naive

REGIMES = {  # log of decays a in (0, 1)
    "mixed": lambda u: torch.log(u.clamp_min(1e-6)),
    "near0": lambda u: torch.log(u * 1e-3 + 1e-9),
    "near1": lambda u: torch.log1p(-u * 1e-3),
}


def make(backend, length, regime, with_h0, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, t, d = shape(backend, length)
    inputs = {
        "log_a": REGIMES[regime](torch.rand(b, t, d, generator=gen)),
        "log_x": torch.randn(b, t, d, generator=gen),
        "log_h0": torch.randn(b, d, generator=gen) if with_h0 else None,
    }
    return {k: (v.to(DEVICE, dtype) if v is not None else None) for k, v in inputs.items()}


def fast(backend):
    return lambda log_a, log_x, log_h0: zoo_kernels.log_linear_scan(log_a, log_x, log_h0, backend=backend)


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_naive_fp32(backend, regime, with_h0):
    for length in lengths(backend):
        compare(fast(backend), naive.log_linear_scan, make(backend, length, regime, with_h0), FP32_TOL)


@pytest.mark.parametrize("with_h0", [False, True])
def test_noncontiguous_inputs(backend, with_h0):
    inputs = make(backend, 33, "mixed", with_h0)
    compare(fast(backend), naive.log_linear_scan, inputs, FP32_TOL, noncontiguous=True)


@pytest.mark.parametrize("regime", ["mixed", "near1"])
def test_bf16_inputs(backend, regime):
    inputs = make(backend, 64 if backend == "triton" else 100, regime, True, dtype=torch.bfloat16)
    compare(fast(backend), naive.log_linear_scan, inputs, BF16_TOL)


def test_zero_inputs_give_finite_grads(backend):
    """log_x = -inf (x = 0) at some steps after the first: no NaN in values or grads."""
    inputs = make(backend, 33, "mixed", False)
    inputs["log_x"][:, 5:9] = -math.inf
    compare(fast(backend), naive.log_linear_scan, inputs, FP32_TOL)
