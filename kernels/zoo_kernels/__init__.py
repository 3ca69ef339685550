"""zoo-kernels: linear recurrences (scans) over time for recurrent mixers.

All tensors are (batch, time, channels); every op scans over dim 1 and returns
(states, last_state) with last_state in float32 (float64 for float64 inputs).
Mamba-2's SSD (`ssd_scan`) takes per-head tensors, (batch, time, heads, ...).

One folder per op, each with its naive reference, its CPU path (chunked PyTorch and/or
C compiled at first use, zoo_kernels.cbuild), its Triton path and one dispatch in its
__init__: scan/ (linear_scan, log_linear_scan), rglru/ (rg_lru), selective/
(selective_scan), ssd/ (ssd_scan), conv/ (causal_conv1d, CausalConv). Every op takes
backend= naive | torch | triton; by default zoo_kernels.backends picks one per call.
glu/ (glu, gated), the gated activation of GLU MLPs, norm/ (rms_norm) and rope/ (rotary) are
fused layers: naive or the compiled CPU kernel.
"""

from __future__ import annotations

from .backends import available_backends
from .conv import CausalConv, causal_conv1d
from .glu import gated, glu
from .norm import rms_norm
from .rglru import rg_lru
from .rope import rotary
from .scan import linear_scan, log_linear_scan
from .selective import selective_scan
from .ssd import ssd_scan

__all__ = [
    "linear_scan",
    "log_linear_scan",
    "rg_lru",
    "selective_scan",
    "ssd_scan",
    "available_backends",
    "CausalConv",
    "causal_conv1d",
    "glu",
    "gated",
    "rms_norm",
    "rotary",
]
__version__ = "0.1.0"
