"""Shared checking code: run an op and its float64 naive reference, compare outputs and grads."""

from __future__ import annotations

import pytest
import torch

from zoo_kernels import backends, cbuild

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NO_TRITON = "triton is not importable (pip install 'zoo-kernels[triton]'); the Triton path is not tested"
FAST_BACKENDS = [
    pytest.param("torch"),
    pytest.param("triton", marks=pytest.mark.skipif(not backends.triton_installed(), reason=NO_TRITON)),
]

NEEDS_KERNEL = pytest.mark.skipif(
    not cbuild.available(), reason=f"compiled CPU kernel not built here: {cbuild.why_unavailable()}"
)
#: The compiled C kernel, and the PyTorch path inside the same op (ZOO_KERNELS_CPP=0).
CPU_PATHS = [pytest.param("compiled", marks=NEEDS_KERNEL), "torch"]

FP32_TOL = 1e-5
BF16_TOL = 1e-2

# The Triton interpreter costs ~70 us per element: keep its shapes tiny. On a GPU the
# compiled kernels also run lengths of several time tiles and a partial channel block.
TRITON_LENGTHS = (1, 7, 33, 64) + ((300, 1000) if DEVICE == "cuda" else ())
TORCH_LENGTHS = (1, 7, 33, 100, 300)


def lengths(backend):
    return TRITON_LENGTHS if backend == "triton" else TORCH_LENGTHS


def shape(backend, length):
    if backend == "triton":
        return (3, length, 48) if DEVICE == "cuda" else (2, length, 16)
    return (3, length, 24)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (norm-wise relative error)."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def transposed(t: torch.Tensor) -> torch.Tensor:
    """The same values as a non-contiguous view (time is not the middle-stride dim)."""
    return t.transpose(1, 2).contiguous().transpose(1, 2) if t.dim() == 3 else t.clone()


def run(fn, inputs: dict, weights: tuple) -> list:
    """Outputs of fn(**inputs) and grads of a weighted sum of them w.r.t. every tensor input."""
    leaves = {k: (v.detach().requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    out, last = fn(**leaves)
    loss = (out.double() * weights[0]).sum() + (last.double() * weights[1]).sum()
    tensors = [v for v in leaves.values() if isinstance(v, torch.Tensor)]
    # allow_unused: e.g. the naive log scan never touches log_a[:, 0] without h0
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
    return [out, last, *grads]


def compare(fn, ref_fn, inputs: dict, tol: float, noncontiguous=False) -> None:
    """fn on `inputs` (their dtype) vs ref_fn on the same values in float64."""
    ref_inputs = {k: (v.detach().double() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    if noncontiguous:
        inputs = {k: (transposed(v) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        assert any(isinstance(v, torch.Tensor) and not v.is_contiguous() for v in inputs.values())
    some = next(v for v in inputs.values() if isinstance(v, torch.Tensor) and v.dim() == 3)
    gen = torch.Generator().manual_seed(1)
    w_out = torch.randn(some.shape, generator=gen, dtype=torch.float64).to(some.device)
    w_last = torch.randn(some.shape[0], some.shape[2], generator=gen, dtype=torch.float64).to(some.device)
    got = run(fn, inputs, (w_out, w_last))
    want = run(ref_fn, ref_inputs, (w_out, w_last))
    names = ["output", "last state"] + [f"grad {k}" for k, v in inputs.items() if isinstance(v, torch.Tensor)]
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape, name
        assert torch.isfinite(g).all(), f"{name} has inf/NaN"
        err = rel_err(g, w)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"
