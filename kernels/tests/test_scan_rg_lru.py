"""rg_lru (torch: gates + chunked scan; triton: gates fused in the kernels) against the naive loop."""

import pytest
import torch
from scan_checks import BF16_TOL, DEVICE, FP32_TOL, compare, lengths, shape

import zoo_kernels
from zoo_kernels.rglru import naive

# a = sigmoid(a_param) ** (c r): a_param sets how close the decays sit to 0 or 1
REGIMES = {
    "mixed": lambda u: u * 6 - 1,
    "near0": lambda u: -6 - u,  # a ~ e^{-48 r}
    "near1": lambda u: 7 + u,  # 1 - a ~ 8 r e^{-a_param}
}


def make(backend, length, regime, with_h0, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, t, d = shape(backend, length)
    inputs = {
        "x": torch.randn(b, t, d, generator=gen),
        "r_pre": torch.randn(b, t, d, generator=gen),
        "i_pre": torch.randn(b, t, d, generator=gen),
        "a_param": REGIMES[regime](torch.rand(d, generator=gen)),
        "c": 8.0,
        "h0": torch.randn(b, d, generator=gen) if with_h0 else None,
    }
    return {k: (v.to(DEVICE, dtype) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


def fast(backend):
    return lambda **kw: zoo_kernels.rg_lru(**kw, backend=backend)


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_naive_fp32(backend, regime, with_h0):
    for length in lengths(backend):
        compare(fast(backend), naive.rg_lru, make(backend, length, regime, with_h0), FP32_TOL)


@pytest.mark.parametrize("with_h0", [False, True])
def test_noncontiguous_inputs(backend, with_h0):
    compare(fast(backend), naive.rg_lru, make(backend, 33, "mixed", with_h0), FP32_TOL, noncontiguous=True)


@pytest.mark.parametrize("regime", ["mixed", "near1"])
def test_bf16_inputs(backend, regime):
    inputs = make(backend, 64 if backend == "triton" else 100, regime, True, dtype=torch.bfloat16)
    inputs["a_param"] = inputs["a_param"].float()  # parameters usually stay fp32
    compare(fast(backend), naive.rg_lru, inputs, BF16_TOL)


def test_saturated_gate_gives_finite_grads(backend):
    """r = sigmoid(r_pre) == 0 exactly makes a == 1 and sqrt(1 - a^2) == 0: grads stay finite."""
    inputs = make(backend, 7, "mixed", True)
    inputs["r_pre"][:, 3] = -200.0
    leaves = {k: (v.requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    out = zoo_kernels.rg_lru(**leaves, backend=backend)
    out[0].sum().backward()
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            assert torch.isfinite(v.grad).all(), k
