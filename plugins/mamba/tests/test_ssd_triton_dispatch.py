"""Mamba-2 on CUDA without mamba-ssm runs zoo-kernels' Triton SSD, and says so in one line, once.

mamba-ssm and causal-conv1d are made to fail to import. Without a GPU, the device check of the
dispatch (paths._on_cuda) also answers True for CPU tensors, so the mixer takes its CUDA
branch; nothing else is faked: the Triton kernels really run (under TRITON_INTERPRET=1, which
conftest.py sets, on the CPU tensors) and their outputs, states and gradients are compared with
the naive path's, in float64 (round-off only: 1e-10). On a GPU the test runs on CUDA tensors with the real device
check, in float32 (1e-3: the naive loop's einsums may run in TF32 there).
"""

import sys
import warnings

import pytest
import torch

from zoo_kernels.backends import triton_installed
from zoo_mamba import Mamba2, Mamba2Config, paths

pytestmark = pytest.mark.skipif(
    not triton_installed(),
    reason="triton is not importable (pip install 'zoo-kernels[triton]'); the Triton SSD dispatch is not tested",
)


CUDA = torch.cuda.is_available()
DEVICE, DTYPE, TOL = ("cuda", torch.float32, 1e-3) if CUDA else ("cpu", torch.float64, 1e-10)


@pytest.fixture
def cuda_without_mamba_ssm(monkeypatch):
    if not CUDA:
        monkeypatch.setattr(paths, "_on_cuda", lambda t: True)
    for lib in ("mamba_ssm", "causal_conv1d"):
        monkeypatch.setitem(sys.modules, lib, None)  # `import lib` raises ImportError
    monkeypatch.setattr(paths, "_found", {})
    monkeypatch.setattr(paths, "_said", set())


def test_mamba2_cuda_dispatch_takes_the_ssd_triton_kernels_without_mamba_ssm(cuda_without_mamba_ssm, monkeypatch):
    calls = []
    real = paths.ssd_triton
    monkeypatch.setattr(paths, "ssd_triton", lambda *a: calls.append(a[0].shape) or real(*a))
    torch.manual_seed(0)
    cfg = dict(d_state=4, headdim=4, ngroups=2, chunk_size=4)  # 4 heads in 2 groups
    fast = Mamba2(8, Mamba2Config(**cfg)).to(DEVICE, DTYPE)
    ref = Mamba2(8, Mamba2Config(**cfg, backend="naive")).to(DEVICE, DTYPE)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 7, 8, dtype=DTYPE, device=DEVICE)

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        y, state = fast(x.requires_grad_(), return_state=True)
        fast(x.detach())
    lines = [str(w.message) for w in said if "mamba-ssm" in str(w.message)]
    assert lines == [
        "zoo-mamba: mamba-ssm is not installed; using zoo-kernels' Triton SSD (pip install 'zoo-mamba[cuda]')"
    ]
    assert calls == [(2, 7, 4, 4)] * 2

    y_ref, state_ref = ref(x, return_state=True)
    torch.testing.assert_close(y, y_ref, rtol=TOL, atol=TOL)
    torch.testing.assert_close(state["ssm"], state_ref["ssm"], rtol=TOL, atol=TOL)
    w = torch.randn_like(y)
    got = torch.autograd.grad((y * w).sum(), [x, *fast.parameters()])
    want = torch.autograd.grad((y_ref * w).sum(), [x, *ref.parameters()])
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=TOL, atol=TOL)


def test_mamba2_cpu_dispatch_stays_on_the_chunked_path(monkeypatch):
    """On CPU tensors (the real device check) the SSD is the PyTorch chunked path, silently."""
    monkeypatch.setattr(paths, "ssd_triton", lambda *a: pytest.fail("Triton SSD taken for a CPU tensor"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert paths.ssd_path(torch.zeros(1)) == "chunked"
        Mamba2(8, Mamba2Config(d_state=4, headdim=4))(torch.randn(1, 5, 8))
