"""The layers every model shares: RMSNorm (the final norm, and the default block's) and the
SwiGLU channel MLP. `zoo_core.blocks` re-exports them for plugins."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.errors import UserError

_FUSED_RMS_NORM = hasattr(torch.ops.aten, "_fused_rms_norm")  # torch >= 2.8


def _fused(name: str):
    """zoo-kernels' fused CPU layer `name` (glu: the gated activation; rms_norm), or None without
    zoo-kernels (every plugin installs it) or with ZOO_FUSED_LAYERS=0: then the forms here."""
    if os.environ.get("ZOO_FUSED_LAYERS", "1") == "0":
        return None
    try:
        import zoo_kernels
    except ImportError:
        return None
    return getattr(zoo_kernels, name)


class _RMSNormFn(torch.autograd.Function):
    """F.rms_norm's values from aten's fused forward, which also returns 1/rms. Autograd's
    backward through rms_norm runs about nine elementwise passes on CPU; this one runs five
    (0.9 against 1.6 ms forward + backward at (8, 256, 256) on 2 cores)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        x, weight, rstd = ctx.saved_tensors
        dim = x.shape[-1]
        dx = dw = None
        if ctx.needs_input_grad[0]:
            gw = g * weight
            dot = (gw * x).sum(-1, keepdim=True)
            # d/dx of x * rstd * w: rstd * (g w) - x * rstd^3 * <g w, x> / dim
            dx = torch.addcmul(gw.mul_(rstd), x, rstd.pow(3).mul_(dot), value=-1.0 / dim)
        if ctx.needs_input_grad[1]:
            dw = (g * x).reshape(-1, dim).t() @ rstd.reshape(-1)
        return dx, dw, None


def _autocast_bf16() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float32, torch.float64) and self.weight.dtype == x.dtype:
            cpu_eager = x.device.type == "cpu" and not torch.compiler.is_compiling()
            fused = _fused("rms_norm") if cpu_eager else None
            if fused is not None:
                # Under CPU bf16 autocast the output is bf16 (computed in fp32): the next matmul reads
                # it as is instead of casting an fp32 copy, forward and backward.
                bf16 = x.dtype == torch.float32 and _autocast_bf16()
                return fused(x, self.weight, self.eps, torch.bfloat16 if bf16 else None)
            if _FUSED_RMS_NORM and cpu_eager:
                return _RMSNormFn.apply(x, self.weight, self.eps)
            # One fused op forward and backward (the same values as below for fp32).
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # Normalise in fp32 for bf16 stability, return in the input dtype.
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def swiglu_hidden(dim: int, mult: float, multiple_of: int = 32) -> int:
    hidden = int(mult * dim)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class _SiLUGate(torch.autograd.Function):
    """SiLU(gate) * value over h = [gate, value]. Autograd through `chunk` would gather
    the two halves' gradients with a cat, a copy as big as h (5% of a small model's
    CPU step); this backward writes them into one buffer instead."""

    @staticmethod
    def forward(ctx, h: Tensor) -> Tensor:
        gate, value = h.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(h, act)
        return act * value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> Tensor:
        h, act = ctx.saved_tensors
        gate, value = h.chunk(2, dim=-1)
        grad = torch.empty_like(h)
        g_gate, g_value = grad.chunk(2, dim=-1)
        torch.ops.aten.silu_backward.grad_input(g * value, gate, grad_input=g_gate)
        torch.mul(g, act, out=g_value)
        return grad


MLP_ACTS = ("silu", "gelu_tanh")


class SwiGLU(nn.Module):
    """act(W_gate x) * (W_value x), projected back: SwiGLU with act=silu, GeGLU (tanh GeLU,
    as Griffin / RecurrentGemma) with act=gelu_tanh."""

    def __init__(self, dim: int, hidden: int, act: str = "silu", bias: bool = False) -> None:
        super().__init__()
        if act not in MLP_ACTS:
            raise UserError(f"model.block.mlp_act={act} is not one of {', '.join(MLP_ACTS)}")
        self.w_in = nn.Linear(dim, 2 * hidden, bias=bias)  # gate and value in one matmul
        self.w_out = nn.Linear(hidden, dim, bias=bias)
        self.hidden, self.act = hidden, act

    def forward(self, x: Tensor) -> Tensor:
        h = self.w_in(x)
        fused = None if torch.compiler.is_compiling() else _fused("glu")
        if fused is not None:
            return self.w_out(fused(h, self.act))
        if self.act == "silu" and not torch.compiler.is_compiling():
            return self.w_out(_SiLUGate.apply(h))
        # inductor fuses the plain form, forward and backward, into one loop each
        gate, value = h.chunk(2, dim=-1)
        act = F.silu(gate) if self.act == "silu" else F.gelu(gate, approximate="tanh")
        return self.w_out(act * value)

    def flops_per_token(self) -> float:
        return 2.0 * 3 * self.dim_in * self.hidden

    @property
    def dim_in(self) -> int:
        return self.w_in.in_features
