"""Helpers for tests that use Hugging Face transformers as an outside oracle.

    transformers = require_transformers()          # skips the test, one line, when absent
    with hf_float64():                             # transformers' torch paths, kept in float64
        out = hf_module(x)

transformers' reference (non-CUDA) paths cast to float32 in places (`A_log.float()`,
the chunked scan's `.float()`, norms' `.to(torch.float32)`), which would cap a float64
comparison at float32 rounding. `hf_float64` keeps float64 tensors float64 through
those casts while it is active, so module-level comparisons can be held to ~1e-12.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch

#: Nothing reaches a hub: every HF model in zoo's tests is built from a config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def require_transformers() -> Any:
    import pytest
    return pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")


@contextlib.contextmanager
def hf_float64() -> Iterator[None]:
    f64, f32 = torch.float64, torch.float32
    orig_float, orig_to = torch.Tensor.float, torch.Tensor.to

    def float_(self, *args, **kwargs):
        return self if self.dtype == f64 else orig_float(self, *args, **kwargs)

    def to(self, *args, **kwargs):
        if self.dtype == f64:
            args = tuple(f64 if a is f32 else a for a in args)
            if kwargs.get("dtype") is f32:
                kwargs["dtype"] = f64
        return orig_to(self, *args, **kwargs)

    torch.Tensor.float, torch.Tensor.to = float_, to
    try:
        yield
    finally:
        torch.Tensor.float, torch.Tensor.to = orig_float, orig_to
