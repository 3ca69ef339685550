"""A short depthwise causal convolution over time, with the state `step` needs.

Shared by the recurrent plugins: Hawk's width-4 conv and the minGRU/minLSTM
option through `CausalConv`, Mamba-1/2's conv + SiLU through `causal_conv1d`.

y_t = act(b + sum_j w_j * x_{t-k+1+j}) per channel; the state is the last k-1
inputs (B, k-1, C), zeros before the first token.

On CPU (float32/float64, one dtype) `causal_conv1d` runs the compiled kernel in
cpu_conv_src.py: one pass that reads x and writes y, and a backward that
recomputes the pre-activation. The torch path (shifted multiply-adds on CPU,
F.conv1d on CUDA) is the fallback and what other devices and dtypes run.

Measured (2 threads, 2-core AMD EPYC VM shared with other work, load average
~0.9, torch 2.13 CPU, medians), W=4: Mamba's conv + SiLU (8, 256, 640), old
shifted sums -> fused: forward 2.0 -> 0.41 ms, forward + backward 8.6 -> 1.9 ms;
CausalConv (8, 256, 344), F.conv1d -> fused: 0.59 -> 0.24 ms, 3.1 -> 0.94 ms.
"""
from __future__ import annotations

import ctypes
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cpu_kernel

ACTIVATIONS = ("none", "silu")


# ---- the torch path: the definition, the fallback, and what CUDA runs ------------------------------

def _conv_torch(x: Tensor, weight: Tensor, bias: Optional[Tensor], prev: Tensor, silu: bool) -> Tensor:
    T, C = x.shape[1], x.shape[2]
    xs = torch.cat([prev, x], dim=1)
    if x.is_cuda:
        y = F.conv1d(xs.transpose(1, 2), weight[:, None, :], bias, groups=C).transpose(1, 2)
    else:  # W shifted multiply-adds: 1.5-5x faster than depthwise F.conv1d on CPU
        y = xs[:, :T] * weight[:, 0]
        for k in range(1, weight.shape[1]):
            y = y + xs[:, k:k + T] * weight[:, k]
        y = y if bias is None else y + bias
    return F.silu(y) if silu else y


def _conv_torch_backward(x, weight, bias, prev, gy, silu):
    """The op's backward without the kernel, in closed form: (dx, dweight, dbias, dprev)."""
    T, W = x.shape[1], weight.shape[1]
    xs = torch.cat([prev, x], dim=1)
    gp = gy
    if silu:  # SiLU'(p) = s (1 + p (1 - s)), s = sigmoid(p)
        p = _conv_torch(x, weight, bias, prev, False)
        s = torch.sigmoid(p)
        gp = gy * s * (1 + p * (1 - s))
    dxs, dw = torch.zeros_like(xs), torch.empty_like(weight)
    for k in range(W):
        dxs[:, k:k + T] += gp * weight[:, k]
        dw[:, k] = (gp * xs[:, k:k + T]).sum((0, 1))
    return dxs[:, W - 1:].contiguous(), dw, gp.sum((0, 1)), dxs[:, :W - 1].clone()  # no aliases: W = 1


# ---- the compiled CPU kernel as a custom op (torch.compile traces it as one node) ---------------

def _compiled(x: Tensor) -> bool:
    # read at every call, so ZOO_KERNELS_CPP=0 switches to the torch path inside the op
    return cpu_kernel.enabled() and cpu_kernel.load() is not None


def _call(kind, x, weight, bias, prev, silu, **out):
    bsz, T, C = x.shape
    threads = torch.get_num_threads() if x.numel() >= cpu_kernel.PARALLEL_MIN else 1
    names = ["gy", "y", "dx", "dprev", "dw", "db"]
    ptrs = [None if out.get(n) is None else out[n].data_ptr() for n in names]
    st = (ctypes.c_int64 * 4)(x.stride(0), x.stride(1), prev.stride(0), prev.stride(1))
    wt = weight.t().contiguous()  # (W, C): channels contiguous, like x
    bias = x.new_zeros(C) if bias is None else bias.contiguous()  # the kernel always adds one
    kind += 1 if x.dtype == torch.float64 else 0
    err = cpu_kernel.load().zoo_causal_conv(
        kind, x.data_ptr(), prev.data_ptr(), wt.data_ptr(), bias.data_ptr(), *ptrs,
        st, bsz, T, C, weight.shape[1], cpu_kernel._block(bsz, C, threads), int(silu), threads)
    if err:
        raise MemoryError("zoo-kernels: the fused causal conv could not allocate its scratch buffer")


@torch.library.custom_op("zoo_kernels::causal_conv1d", mutates_args=())
def _conv_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], prev: Tensor, silu: bool) -> Tensor:
    if not _compiled(x):
        return _conv_torch(x, weight, bias, prev, silu)
    y = torch.empty(x.shape, dtype=x.dtype)
    _call(0, x, weight, bias, prev, silu, y=y)
    return y


@_conv_op.register_fake
def _(x, weight, bias, prev, silu):
    return x.new_empty(x.shape)


@torch.library.custom_op("zoo_kernels::causal_conv1d_backward", mutates_args=())
def _conv_bwd_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], prev: Tensor, gy: Tensor,
                 silu: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias, dprev); dbias is gy's act'-weighted sum even without a bias."""
    if not _compiled(x):
        return _conv_torch_backward(x, weight, bias, prev, gy, silu)
    bsz, T, C = x.shape
    W = weight.shape[1]
    dx, dprev = torch.empty(x.shape, dtype=x.dtype), x.new_empty(bsz, W - 1, C)
    dw, db = x.new_empty(bsz, W, C), x.new_empty(bsz, C)  # per batch row, summed here
    _call(2, x, weight, bias, prev, silu, gy=gy, dx=dx, dprev=dprev, dw=dw, db=db)
    return dx, dw.sum(0).t().contiguous(), db.sum(0), dprev


@_conv_bwd_op.register_fake
def _(x, weight, bias, prev, gy, silu):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), x.new_empty(x.shape[2]), prev.new_empty(prev.shape)


def _conv_setup(ctx, inputs, output):
    x, weight, bias, prev, silu = inputs
    ctx.save_for_backward(x, weight, bias, prev)  # the inputs only: the backward recomputes p
    ctx.silu, ctx.has_bias = silu, bias is not None


def _conv_backward(ctx, gy):
    x, weight, bias, prev = ctx.saved_tensors
    gy = torch.zeros_like(x) if gy is None else gy.contiguous()
    dx, dw, db, dprev = _conv_bwd_op(x, weight, bias if ctx.has_bias else None, prev, gy, ctx.silu)
    return dx, dw, (db if ctx.has_bias else None), dprev, None


_conv_op.register_autograd(_conv_backward, setup_context=_conv_setup)


def _channels_contiguous(t: Tensor) -> Tensor:
    # the kernel takes any batch/time strides (e.g. Mamba's slice of in_proj's output)
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def _last_inputs(x: Tensor, prev: Tensor, keep: int) -> Tensor:
    """The last `keep` rows of cat(prev, x) over time, a new tensor (not a view of x)."""
    T = x.shape[1]
    if T >= keep:
        return x[:, T - keep:].clone()
    return torch.cat([prev[:, T:], x], dim=1)


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, prev: Optional[Tensor] = None,
                  activation: str = "none") -> Tuple[Tensor, Tensor]:
    """Depthwise causal conv over time: x (B, T, C), weight (C, W) with weight[:, -1] on x_t, bias (C,),
    prev (B, W-1, C) the inputs before x (zeros when None), activation "none" or "silu".

    Returns y (B, T, C) = act(bias + sum_k weight[:, k] xpad[:, t+k]), xpad = cat(prev, x) over time,
    and the new state: the last W-1 rows of xpad (x's dtype)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"causal_conv1d: activation {activation!r} is not one of {ACTIVATIONS}")
    B, T, C = x.shape
    W = weight.shape[1]
    if weight.shape[0] != C or (bias is not None and bias.shape != (C,)) \
            or (prev is not None and prev.shape != (B, W - 1, C)):
        raise ValueError(f"causal_conv1d: expected x (B, T, C), weight (C, W), bias (C,), prev (B, W-1, C); "
                         f"got x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"bias {None if bias is None else tuple(bias.shape)}, "
                         f"prev {None if prev is None else tuple(prev.shape)}")
    prev = x.new_zeros(B, W - 1, C) if prev is None else prev.to(x.dtype)
    silu = activation == "silu"
    tensors = (x, weight, prev) if bias is None else (x, weight, prev, bias)
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) \
            and all(t.dtype == x.dtype and t.device == x.device for t in tensors):
        y = _conv_op(_channels_contiguous(x), weight, bias, _channels_contiguous(prev), silu)
    else:
        y = _conv_torch(x, weight, bias, prev, silu)
    return y, _last_inputs(x, prev, W - 1)


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
        return torch.zeros(batch_size, self.width - 1, self.channels,
                           device=device or self.weight.device, dtype=dtype or self.weight.dtype)

    def forward(self, x: Tensor, prev: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """x (B, T, C), prev (B, k-1, C) or None -> y (B, T, C), new state (B, k-1, C)."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        y, state = causal_conv1d(x, self.weight.to(x.dtype), bias, prev)
        return y, state.to(self.weight.dtype)  # the state matches init_state under autocast

    def step(self, x: Tensor, prev: Tensor) -> Tuple[Tensor, Tensor]:
        """x (B, C): one token."""
        xx = torch.cat([prev.to(x.dtype), x[:, None]], dim=1)  # (B, k, C)
        y = (xx * self.weight.t().to(x.dtype)).sum(1)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y, self._keep(xx)

    def _keep(self, xx: Tensor) -> Tensor:
        # Stored in the parameter dtype so the state matches init_state under autocast.
        return xx[:, xx.shape[1] - (self.width - 1):].to(self.weight.dtype)

    def flops_per_token(self) -> float:
        return 2.0 * self.width * self.channels
