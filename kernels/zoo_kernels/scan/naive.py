"""Reference definitions: one Python step per time step, gradients by autograd.

These are the specification the fast paths are tested against (in float64).
States are kept in float32 (float64 for float64 inputs), like the fast paths.
Time steps come from unbind(1): its backward is one stack, where indexing
x[:, t] would make autograd build a full-size zero tensor per step (O(T^2)).
"""

from __future__ import annotations

import torch

from .._tensors import acc_dtype


def linear_scan(a, x, h0=None):
    """h_t = a_t * h_{t-1} + x_t."""
    acc = acc_dtype(a, x)
    h = torch.zeros_like(x[:, 0], dtype=acc) if h0 is None else h0.to(acc)
    hs = []
    for a_t, x_t in zip(a.to(acc).unbind(1), x.to(acc).unbind(1)):
        h = a_t * h + x_t
        hs.append(h)
    return torch.stack(hs, 1).to(x.dtype), h


def log_linear_scan(log_a, log_x, log_h0=None):
    """log_h_t = log(exp(log_a_t) * h_{t-1} + exp(log_x_t)), h_0 = exp(log_h0) or 0."""
    acc = acc_dtype(log_a, log_x)
    log_h = None if log_h0 is None else log_h0.to(acc)
    out = []
    for la_t, lx_t in zip(log_a.to(acc).unbind(1), log_x.to(acc).unbind(1)):
        log_h = lx_t if log_h is None else torch.logaddexp(la_t + log_h, lx_t)
        out.append(log_h)
    return torch.stack(out, 1).to(log_x.dtype), log_h
