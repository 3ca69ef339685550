"""Which implementation runs: naive | torch | triton.

Default: triton for CUDA tensors (when triton imports), torch otherwise.
The environment variable ZOO_KERNELS=naive|torch|triton forces one; it is read
at every call, so tests and benchmarks can switch it on the fly.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch

NAMES = ("naive", "torch", "triton")


def triton_installed() -> bool:
    # find_spec does not import triton: the package must work without it.
    return importlib.util.find_spec("triton") is not None


def triton_usable() -> bool:
    """Triton runs on CUDA devices, or on CPU tensors under TRITON_INTERPRET=1."""
    if not triton_installed():
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def available_backends() -> list[str]:
    """Backends that can run on this machine, in the order naive, torch, triton."""
    return [n for n in NAMES if n != "triton" or triton_usable()]


def select(t: torch.Tensor) -> str:
    forced = os.environ.get("ZOO_KERNELS", "").strip().lower()
    if forced:
        if forced not in NAMES:
            raise ValueError(f"ZOO_KERNELS={forced!r}: expected one of {NAMES}")
        return forced
    return "triton" if t.is_cuda and triton_installed() else "torch"


def module(name: str):
    """The module implementing a backend's forward/backward primitives."""
    if name == "torch":
        from . import chunked

        return chunked
    if name == "triton":
        if not triton_installed():
            raise RuntimeError("backend 'triton' requested but triton is not installed")
        return importlib.import_module("zoo_kernels.triton_scan")  # imports triton lazily
    raise ValueError(f"unknown backend {name!r}: expected one of {NAMES}")
