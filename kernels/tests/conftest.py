"""Test setup: Triton kernels run on CPU through the interpreter when there is no GPU.

TRITON_INTERPRET must be set before triton is imported; zoo_kernels imports
triton lazily, so setting it here (before any test imports it) is enough.
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# the repo runs pytest with --import-mode=importlib, which does not put test
# folders on sys.path: make the shared helper module importable either way
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_checks import CPU_PATHS, FAST_BACKENDS  # noqa: E402


@pytest.fixture(params=FAST_BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=CPU_PATHS)
def path(request, monkeypatch):
    """A CPU op's compiled kernel, or its PyTorch path (ZOO_KERNELS_CPP=0)."""
    monkeypatch.setenv("ZOO_KERNELS_CPP", "1" if request.param == "compiled" else "0")
    return request.param


@pytest.fixture(autouse=True)
def _no_forced_backend(monkeypatch):
    monkeypatch.delenv("ZOO_KERNELS", raising=False)
