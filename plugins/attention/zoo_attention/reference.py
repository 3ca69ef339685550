"""Attention as the equations write it: the definition the fast path is tested against.
The reference RoPE sits with the fast one in rope.py (re-exported here as `rope`)."""

import math

import torch
from torch import Tensor

from zoo_attention.rope import rope  # noqa: F401  (the reference rotation, beside its fast form)


def allowed(q_pos: Tensor, k_pos: Tensor, window: int | None, q_start: Tensor | None = None) -> Tensor:
    """(B, Tq, Tk) mask over stream positions (B, Tq) and (B, Tk): key j is visible from query i
    iff it is not in the future, with a window w fewer than w positions back, and with `q_start`
    (B, Tq), the stream position where query i's document starts, not before that start
    (document-causal: block-diagonal causal, the window inside the document)."""
    diff = q_pos[:, :, None] - k_pos[:, None, :]
    ok = diff >= 0
    if window:
        ok &= diff < window
    if q_start is not None:
        ok &= k_pos[:, None, :] >= q_start[:, :, None]
    return ok


def naive_attention(q: Tensor, k: Tensor, v: Tensor, visible: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, with grouped kv heads repeated; `visible` (B, Tq, Tk)
    is the mask `allowed` gives (-inf where it is False)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    work = torch.promote_types(q.dtype, torch.float32)
    scores = (q.to(work) @ k.to(work).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    return (scores.softmax(-1) @ v.to(work)).type_as(q)
