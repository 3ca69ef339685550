"""flash-attn, when installed on CUDA (`pip install 'zoo-attention[cuda]'`).

Imported lazily; when it is missing on a GPU the mixer says so once and uses
PyTorch SDPA, which computes the same function."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

_fn = None
_checked = False


def usable(q: Tensor) -> bool:
    global _fn, _checked
    if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if not _checked:
        _checked = True
        try:
            from flash_attn import flash_attn_func

            _fn = flash_attn_func
        except ImportError:
            warnings.warn(
                "zoo-attention: flash-attn is not installed; using PyTorch SDPA "
                "(pip install 'zoo-attention[cuda]' for flash-attn)",
                stacklevel=2,
            )
    return _fn is not None


_said = False


def say_resets_use_sdpa() -> None:
    """Document resets run SDPA with a block-diagonal mask, not flash-attn's varlen kernel (untested
    here): said once per process."""
    global _said
    if not _said:
        _said = True
        warnings.warn(
            "zoo-attention: data.documents=reset runs PyTorch SDPA with a document mask, not flash-attn",
            stacklevel=3,
        )


def attention(q: Tensor, k: Tensor, v: Tensor, window: int | None) -> Tensor:
    # flash-attn wants (B, T, H, hd) and handles grouped kv heads itself.
    window_size = (window - 1, 0) if window else (-1, -1)
    out = _fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True, window_size=window_size)
    return out.transpose(1, 2)
