"""Attention as the equations write it: the definition the fast path is tested against.
The reference RoPE sits with the fast one in rope.py (re-exported here as `rope`)."""

import math

import torch
from torch import Tensor

from zoo_attention.rope import rope  # noqa: F401  (the reference rotation, beside its fast form)


def allowed(q_pos: Tensor, k_pos: Tensor, window: int | None) -> Tensor:
    """(B, Tq, Tk) mask: key j is visible from query i iff it is not in the
    future and, with a window w, fewer than w positions back."""
    diff = q_pos[:, :, None] - k_pos[:, None, :]
    ok = diff >= 0
    if window:
        ok &= diff < window
    return ok


def naive_attention(q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, window: int | None) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, with grouped kv heads repeated."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    work = torch.promote_types(q.dtype, torch.float32)
    scores = (q.to(work) @ k.to(work).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed(q_pos, k_pos, window)[:, None], float("-inf"))
    return (scores.softmax(-1) @ v.to(work)).type_as(q)
