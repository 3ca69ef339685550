"""Where a Mamba forward or step runs: `pick` chooses the path once per forward, `pick_step`
once per step, and the functions below run the piece (conv, scan) on the path chosen.

    backend=naive    the references (`reference.py`): one Python step per token
    backend=chunked  zoo-kernels: the fused conv + SiLU; Mamba's selective scan (compiled C on
                     CPU, Triton on CUDA); Mamba-2's chunked SSD in PyTorch
    backend=auto     on CUDA: causal-conv1d and mamba-ssm when they import (pip install
                     'zoo-mamba[cuda]'), else zoo-kernels (for Mamba-2's SSD its Triton kernels);
                     off CUDA: chunked

The CUDA libraries are imported lazily, only for CUDA tensors. When one is missing the mixer
says so once, in one line, naming what runs instead, and runs it.

Document resets (data.documents=reset) run on every zoo path (naive and zoo-kernels). The CUDA
libraries' functions used here take no resets (mamba-ssm's chunk_scan_combined has a seq_idx,
which is not used: it cannot be tested here), so a forward with resets that would run one runs
zoo's own path instead, and says so once, in one line.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo_kernels import selective_scan as zoo_selective_scan
from zoo_kernels.backends import triton_installed
from zoo_kernels.ssd import ssd_chunked, ssd_triton
from zoo_mamba import fastpath
from zoo_mamba.common import causal_conv, causal_conv_step, ssm_step_torch
from zoo_mamba.reference import causal_conv_ref, selective_scan_ref, ssd_ref

# -- lazy imports of the CUDA libraries --------------------------------------------------------

_LIBS = {  # module -> what to pip install
    "mamba_ssm": "mamba-ssm",
    "causal_conv1d": "causal-conv1d",
}
_found: dict[str, bool] = {}
_said: set = set()  # (lib, fallback) lines already printed
_TRITON = triton_installed()  # looked up once (find_spec, no import): torch.compile traces ssd_path


def _on_cuda(t: Tensor) -> bool:
    """The device check of every pick below (one place, so a CPU test can stand in for CUDA)."""
    return t.is_cuda


def usable(lib: str, t: Tensor, instead: str | None = None) -> bool:
    """Whether `lib` can run on `t`: CUDA tensors only, and the package imports. When it does
    not, says once, in one line, what runs `instead`."""
    if not _on_cuda(t):
        return False
    if lib not in _found:
        try:
            __import__(lib)
            _found[lib] = True
        except ImportError:  # also raised for ABI-broken builds (mamba issues 97, 237, 317)
            _found[lib] = False
    if not _found[lib]:
        what = instead or ("the PyTorch chunked scan" if lib == "mamba_ssm" else "the PyTorch conv1d")
        if (lib, what) not in _said:
            _said.add((lib, what))
            warnings.warn(
                f"zoo-mamba: {_LIBS[lib]} is not installed; using {what} (pip install 'zoo-mamba[cuda]')", stacklevel=3
            )
    return _found[lib]


def ssd_path(x: Tensor) -> str:
    """Where Mamba-2's SSD runs under backend=auto: "cuda" (mamba-ssm's kernel), "triton"
    (zoo-kernels' Triton SSD: CUDA tensors without mamba-ssm) or "chunked" (PyTorch)."""
    triton = _on_cuda(x) and _TRITON
    if usable("mamba_ssm", x, "zoo-kernels' Triton SSD" if triton else "the PyTorch chunked scan"):
        return "cuda"
    return "triton" if triton else "chunked"


# -- the one choice per call ------------------------------------------------------------------


class Path(NamedTuple):
    conv: str  # naive | cuda | chunked             (forward);  cuda | torch (step)
    scan: str  # naive | cuda | triton | chunked    (forward);  cuda | torch (step)


def _no_resets(lib: str, instead: str) -> None:
    """Says once, in one line, that `lib` takes no document resets and what runs instead."""
    if (lib, "resets") not in _said:
        _said.add((lib, "resets"))
        warnings.warn(
            f"zoo-mamba: {_LIBS[lib]} takes no document resets (data.documents=reset); using {instead}", stacklevel=4
        )


def pick(backend: str, x: Tensor, ssd: bool, carried: bool, return_state: bool, resets: bool = False) -> Path:
    """The path of one forward. `ssd`: Mamba-2's scan (else Mamba's selective scan); `carried`:
    a state comes in; `resets`: documents start inside the segment. causal-conv1d's conv takes
    no initial state, and mamba-ssm's selective scan neither takes nor returns one: with a state
    they leave the piece to zoo-kernels, and with resets every CUDA library piece does."""
    if backend != "auto":
        return Path(backend, backend)
    conv = "cuda" if usable("causal_conv1d", x) and not carried else "chunked"
    if ssd:
        scan = ssd_path(x)
    else:
        scan = "cuda" if usable("mamba_ssm", x) and not carried and not return_state else "chunked"
    if resets and conv == "cuda":
        _no_resets("causal_conv1d", "zoo-kernels' conv")
        conv = "chunked"
    if resets and scan == "cuda":
        triton = ssd and _TRITON
        _no_resets("mamba_ssm", "zoo-kernels' Triton SSD" if triton else "zoo-kernels' scan")
        scan = "triton" if triton else "chunked"
    return Path(conv, scan)


def pick_step(backend: str, x: Tensor) -> Path:
    """The path of one decoding step: the libraries' in-place decode kernels (inference only:
    no autograd) under backend=auto on CUDA with grad off, else the PyTorch recurrence."""

    def impl(lib: str) -> str:
        return "cuda" if backend == "auto" and usable(lib, x) and not torch.is_grad_enabled() else "torch"

    return Path(impl("causal_conv1d"), impl("mamba_ssm"))


# -- forward pieces ---------------------------------------------------------------------------


def conv(
    path: str,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    conv_state: Tensor | None,
    return_state: bool,
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """SiLU(causal depthwise conv) of x (b, T, C) after conv_state; returns (y, new conv state).
    The cuda path (`pick` never gives it with resets) starts from a zero state."""
    if path == "naive":
        return causal_conv_ref(x, weight, bias, conv_state, resets)
    if path == "cuda":
        y = fastpath.conv1d_silu(x, weight, bias, "cuda")
        return y, (last_inputs(x, weight.shape[1]) if return_state else None)
    return causal_conv(x, weight, bias, conv_state, resets)


def selective_scan(
    path: str, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, resets: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Mamba's scan: (y (b, T, D), h_T (b, D, N)) as `reference.selective_scan_ref`."""
    if path == "naive":
        return selective_scan_ref(u, dt, A, B, C, h0, resets)
    if path == "cuda":  # mamba-ssm: from a zero state, no last state, no resets (see `pick`)
        return fastpath.selective_scan(u, dt.to(u.dtype), A, B, C, "cuda"), None
    return zoo_selective_scan(u, dt, A, B, C, h0, resets=resets)


def ssd(
    path: str,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    h0: Tensor | None,
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mamba-2's scan: (y (b, T, H, P), h_T (b, H, P, N)) as `reference.ssd_ref`."""
    if path == "naive":
        return ssd_ref(x, dt, A, B, C, h0, resets)
    if path == "cuda":  # no resets (see `pick`)
        return fastpath.ssd_scan(x, dt, A, B, C, chunk_size, h0, "cuda")
    if path == "triton":
        return ssd_triton(x, dt, A, B, C, chunk_size, h0, resets)
    return ssd_chunked(x, dt, A, B, C, chunk_size, h0, resets)


def last_inputs(x: Tensor, width: int) -> Tensor:
    """The conv state after x from a zero state: its last width-1 inputs, zero-padded in front."""
    keep = width - 1
    if x.shape[1] >= keep:
        return x[:, x.shape[1] - keep :]
    return F.pad(x, (0, 0, keep - x.shape[1], 0))


# -- step pieces ------------------------------------------------------------------------------


def conv_step(path: str, x: Tensor, weight: Tensor, bias: Tensor | None, conv_state: Tensor) -> tuple[Tensor, Tensor]:
    """One token x (b, C) through the conv + SiLU: (y (b, C), new conv state (b, W-1, C))."""
    if path == "cuda":
        return fastpath.conv_step(x, conv_state, weight, bias, "cuda")
    return causal_conv_step(x, weight, bias, conv_state)


def ssm_step(path: str, h: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """One token through either mixer's recurrence (shapes in `common.ssm_step_torch`): (y, new h)."""
    if path == "cuda":
        return fastpath.ssm_step(h, x, dt, A, B, C, "cuda")
    return ssm_step_torch(h, x, dt, A, B, C)
