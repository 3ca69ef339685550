"""The one backend vocabulary: naive | torch | triton, and which one a call runs.

- naive: the op's definition, one step per token (zoo_kernels/<op>/naive.py);
- torch: the CPU fast path: the compiled C kernel where it applies (<op>/*.c, see
  zoo_kernels.cbuild; ZOO_KERNELS_CPP=0 turns it off), else chunked PyTorch;
- triton: the Triton kernels (<op>/triton.py): CUDA tensors, or CPU tensors under
  TRITON_INTERPRET=1.

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


def _checked(name: str, source: str) -> str:
    if name not in NAMES:
        raise ValueError(f"{source}{name!r}: expected one of {NAMES}")
    return name


def select(t: torch.Tensor, backend: str | None = None) -> str:
    """`backend` if given, else ZOO_KERNELS if set, else the default for t's device."""
    if backend is not None:
        return _checked(backend, "backend ")
    forced = os.environ.get("ZOO_KERNELS", "").strip().lower()
    if forced:
        return _checked(forced, "ZOO_KERNELS=")
    return "triton" if t.is_cuda and triton_installed() else "torch"


def triton_module(name: str):
    """zoo_kernels.<name> (an op's triton.py), imported only now: it imports triton."""
    if not triton_installed():
        raise RuntimeError("backend 'triton' requested but triton is not installed")
    return importlib.import_module(f"zoo_kernels.{name}")


def _interpreting() -> bool:
    import triton

    knobs = getattr(triton, "knobs", None)  # triton >= 3.4; older ones read the env var
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_triton_device(t: torch.Tensor) -> None:
    """Raise unless t can go to a Triton kernel: on CUDA, or on CPU under TRITON_INTERPRET=1."""
    if not t.is_cuda and not _interpreting():
        raise RuntimeError(
            "zoo_kernels triton backend: tensors must be on a CUDA device "
            "(CPU tensors only run under TRITON_INTERPRET=1, set before triton is imported)"
        )
