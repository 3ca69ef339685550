"""A short depthwise causal convolution over time, with the state `step` needs.

Shared by the recurrent plugins: Hawk's width-4 conv and the minGRU/minLSTM
option through `CausalConv`, Mamba-1/2's conv + SiLU through `causal_conv1d`.

y_t = act(b + sum_j w_j * x_{t-k+1+j}) per channel; the state is the last k-1
inputs (B, k-1, C), zeros before the first token.

Documents: `resets` (B, T) bool, True where a document starts (x_t is its first token). A tap
that reaches before output t's document start reads zero, as if the document ran alone from a
zero state; positions before a row's first start still see `prev`. The returned state has the
rows before the row's last start zeroed, so the next segment's taps see only the last document.
None runs today's code.

On CPU (float32/float64, one dtype) `causal_conv1d` runs the compiled kernel in
conv/causal_conv.c (conv/cpu.py): one pass that reads x and writes y, and a backward that
recomputes the pre-activation. The torch path (conv/naive.py: shifted multiply-adds on CPU,
F.conv1d on CUDA) is the fallback and what other devices and dtypes run.

Measured (2 threads, 2-core AMD EPYC VM shared with other work, load average
~0.9, torch 2.13 CPU, medians), W=4: Mamba's conv + SiLU (8, 256, 640), old
shifted sums -> fused: forward 2.0 -> 0.41 ms, forward + backward 8.6 -> 1.9 ms;
CausalConv (8, 256, 344), F.conv1d -> fused: 0.59 -> 0.24 ms, 3.1 -> 0.94 ms.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import cbuild
from .._custom_op import define, grad_or_zeros
from .._tensors import channels_contiguous
from . import cpu, naive

ACTIVATIONS = ("none", "silu")


# ---- the op: the compiled CPU kernel (cpu.py) or the torch path (naive.py), traced as one node ----


def _impl():
    # read at every call, so ZOO_KERNELS_CPP=0 switches to the torch path inside the op
    return cpu if cbuild.available() else naive


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, prev: Tensor, resets: Tensor | None, silu: bool) -> Tensor:
    return _impl().conv(x, weight, bias, prev, resets, silu)


def _conv_bwd(
    x: Tensor, weight: Tensor, bias: Tensor | None, prev: Tensor, resets: Tensor | None, gy: Tensor, silu: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias, dprev); dbias is gy's act'-weighted sum even without a bias."""
    return _impl().conv_backward(x, weight, bias, prev, resets, gy, silu)


_conv_bwd_op = define(
    "causal_conv1d_backward",
    _conv_bwd,
    lambda x, weight, bias, prev, resets, gy, silu: (
        x.new_empty(x.shape),
        weight.new_empty(weight.shape),
        x.new_empty(x.shape[2]),
        prev.new_empty(prev.shape),
    ),
)


def _conv_setup(ctx, inputs, output):
    x, weight, bias, prev, resets, silu = inputs
    ctx.save_for_backward(x, weight, bias, prev, resets)  # the inputs only: the backward recomputes p
    ctx.silu, ctx.has_bias, ctx.has_resets = silu, bias is not None, resets is not None


def _conv_backward(ctx, gy):
    x, weight, bias, prev, resets = ctx.saved_tensors
    gy = grad_or_zeros(gy, x.shape, x).contiguous()
    bias, resets = bias if ctx.has_bias else None, resets if ctx.has_resets else None
    dx, dw, db, dprev = _conv_bwd_op(x, weight, bias, prev, resets, gy, ctx.silu)
    return dx, dw, (db if ctx.has_bias else None), dprev, None, None


_conv_op = define(
    "causal_conv1d",
    _conv,
    lambda x, weight, bias, prev, resets, silu: x.new_empty(x.shape),
    backward=_conv_backward,
    setup=_conv_setup,
)


def _last_inputs(x: Tensor, prev: Tensor, keep: int, resets: Tensor | None) -> Tensor:
    """The last `keep` rows of cat(prev, x) over time, a new tensor (not a view of x); with
    resets, the rows before each row's last document start are zero (the next segment's
    first taps must not see the previous document)."""
    T = x.shape[1]
    if T >= keep:
        out = x[:, T - keep :].clone()
    else:
        out = torch.cat([prev[:, T:], x], dim=1)
    if resets is not None and keep > 0:
        pos = torch.arange(T - keep, T, device=x.device)  # the rows' positions in x (< 0: prev)
        idx = torch.arange(T, device=x.device)
        last = torch.where(resets, idx, -keep - 1).amax(1, keepdim=True)  # the last start, or before all
        out = out * (pos >= last)[..., None].to(out.dtype)
    return out


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    prev: Tensor | None = None,
    activation: str = "none",
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv over time: x (B, T, C), weight (C, W) with weight[:, -1] on x_t, bias (C,),
    prev (B, W-1, C) the inputs before x (zeros when None), activation "none" or "silu",
    resets (B, T) bool or None: True where a document starts (its first token).

    Returns y (B, T, C) = act(bias + sum_k weight[:, k] xpad[:, t+k]), xpad = cat(prev, x) over time,
    and the new state: the last W-1 rows of xpad (x's dtype). With resets, a tap that reaches
    before output t's document start reads zero (prev counts only before a row's first start),
    and the state's rows before the row's last start are zero."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"causal_conv1d: activation {activation!r} is not one of {ACTIVATIONS}")
    B, T, C = x.shape
    W = weight.shape[1]
    if (
        weight.shape[0] != C
        or (bias is not None and bias.shape != (C,))
        or (prev is not None and prev.shape != (B, W - 1, C))
        or (resets is not None and resets.shape != (B, T))
    ):
        raise ValueError(
            f"causal_conv1d: expected x (B, T, C), weight (C, W), bias (C,), prev (B, W-1, C), resets (B, T); "
            f"got x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
            f"bias {None if bias is None else tuple(bias.shape)}, "
            f"prev {None if prev is None else tuple(prev.shape)}, "
            f"resets {None if resets is None else tuple(resets.shape)}"
        )
    prev = x.new_zeros(B, W - 1, C) if prev is None else prev.to(x.dtype)
    resets = None if resets is None else resets.to(device=x.device, dtype=torch.bool)
    silu = activation == "silu"
    tensors = (x, weight, prev) if bias is None else (x, weight, prev, bias)
    if (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and all(t.dtype == x.dtype and t.device == x.device for t in tensors)
    ):
        y = _conv_op(*channels_contiguous(x), weight, bias, *channels_contiguous(prev), resets, silu)
    else:
        y = naive.conv(x, weight, bias, prev, resets, silu)
    return y, _last_inputs(x, prev, W - 1, resets)


class CausalConv(nn.Module):
    def __init__(self, channels: int, width: int, bias: bool = False) -> None:
        super().__init__()
        self.channels, self.width = channels, width
        self.weight = nn.Parameter(torch.empty(channels, width))  # w[:, -1] multiplies x_t
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.width)  # fan-in of a depthwise filter is its width
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def init_state(self, batch_size: int, device=None, dtype=None) -> Tensor:
        return torch.zeros(
            batch_size,
            self.width - 1,
            self.channels,
            device=device or self.weight.device,
            dtype=dtype or self.weight.dtype,
        )

    def forward(self, x: Tensor, prev: Tensor | None = None, resets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, T, C), prev (B, k-1, C) or None, resets (B, T) bool or None (True where a
        document starts) -> y (B, T, C), new state (B, k-1, C)."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        y, state = causal_conv1d(x, self.weight.to(x.dtype), bias, prev, resets=resets)
        return y, state.to(self.weight.dtype)  # the state matches init_state under autocast

    def step(self, x: Tensor, prev: Tensor, reset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, C): one token; reset (B,) bool or None: rows whose document starts here see no
        earlier input."""
        if reset is not None:
            prev = prev * (~reset.to(torch.bool)).to(prev.dtype)[:, None, None]
        xx = torch.cat([prev.to(x.dtype), x[:, None]], dim=1)  # (B, k, C)
        y = (xx * self.weight.t().to(x.dtype)).sum(1)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y, self._keep(xx)

    def _keep(self, xx: Tensor) -> Tensor:
        # Stored in the parameter dtype so the state matches init_state under autocast.
        return xx[:, xx.shape[1] - (self.width - 1) :].to(self.weight.dtype)

    def flops_per_token(self) -> float:
        return 2.0 * self.width * self.channels
