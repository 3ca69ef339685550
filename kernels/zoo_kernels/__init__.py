"""zoo-kernels: linear recurrences (scans) over time for recurrent mixers.

All tensors are (batch, time, channels); every op scans over dim 1 and returns
(states, last_state) with last_state in float32 (float64 for float64 inputs).
Mamba-2's SSD (`ssd_scan`, zoo_kernels/ssd/) takes per-head tensors, (batch, time, heads, ...).
The implementation is picked per call: see zoo_kernels.backends.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from . import ops
from .backends import available_backends, select as _select
from .conv import CausalConv, causal_conv1d
from .selective import selective_scan
from .ssd import ssd_scan

__all__ = ["linear_scan", "log_linear_scan", "rg_lru", "selective_scan", "ssd_scan", "available_backends",
           "CausalConv", "causal_conv1d"]
__version__ = "0.1.0"


def linear_scan(a: Tensor, x: Tensor, h0: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """h_t = a_t * h_{t-1} + x_t with h_0 = h0 (or zeros). Returns (h, h_last)."""
    return ops.linear_scan(a, x, h0, backend=_select(x))


def log_linear_scan(
    log_a: Tensor, log_x: Tensor, log_h0: Optional[Tensor] = None
) -> tuple[Tensor, Tensor]:
    """log_h_t = log(exp(log_a_t) * h_{t-1} + exp(log_x_t)); log_h0=None means h_0 = 0.

    Heinsen's log-space scan (arXiv 2311.06281) for positive states, as used by
    minGRU/minLSTM. Returns (log_h, log_h_last).
    """
    return ops.log_linear_scan(log_a, log_x, log_h0, backend=_select(log_x))


def rg_lru(
    x: Tensor,
    r_pre: Tensor,
    i_pre: Tensor,
    a_param: Tensor,
    c: float = 8.0,
    h0: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """Griffin's RG-LRU (arXiv 2402.19427) with its gates fused into the scan.

    r = sigmoid(r_pre), i = sigmoid(i_pre), log a = -c r softplus(-a_param),
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t). a_param is (channels,).
    """
    return ops.rg_lru(x, r_pre, i_pre, a_param, c, h0, backend=_select(x))
