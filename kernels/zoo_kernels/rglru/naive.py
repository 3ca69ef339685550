"""Griffin's RG-LRU, one Python step per time step, gradients by autograd: the specification
the fast paths are tested against (in float64). States are kept in float32 (float64 for
float64 inputs), like the fast paths; time steps come from unbind(1) (see scan/naive.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._tensors import acc_dtype


def rg_lru(x, r_pre, i_pre, a_param, c=8.0, h0=None, resets=None):
    """Griffin's RG-LRU (De et al. 2024, eqs. 1-4). Where a document starts (resets (B, T)
    True), a = 0 and the normaliser is 1, as RecurrentGemma's `multiplier = reset + ~reset *
    multiplier` and `a * ~reset`."""
    acc = acc_dtype(x, r_pre, i_pre)
    r = torch.sigmoid(r_pre.to(acc))  # recurrence gate
    i = torch.sigmoid(i_pre.to(acc))  # input gate
    log_a = -c * r * F.softplus(-a_param.to(acc))  # log(sigmoid(a_param) ** (c r))
    a = torch.exp(log_a)
    scale = torch.sqrt(-torch.expm1(2 * log_a))  # sqrt(1 - a^2) without cancellation
    if resets is not None:
        z = resets[..., None]
        a, scale = a.masked_fill(z, 0.0), scale.masked_fill(z, 1.0)
    h = torch.zeros_like(x[:, 0], dtype=acc) if h0 is None else h0.to(acc)
    u = scale * (i * x.to(acc))  # gated input
    hs = []
    for a_t, u_t in zip(a.unbind(1), u.unbind(1)):
        h = a_t * h + u_t
        hs.append(h)
    return torch.stack(hs, 1).to(x.dtype), h
