"""fp32 linear layers on CPU through oneDNN instead of the BLAS behind `torch.mm`.

PyTorch's CPU wheels send float32 `F.linear` and its backward to MKL's sgemm.
On AMD CPUs MKL runs its AVX2 code, not AVX-512, and reaches about half of what
oneDNN (also inside the wheel; the op inductor uses for frozen CPU linears)
gets at the same shapes: 180 against 350-430 GFLOP/s on 2 Zen 5 cores
(benchmarks/results/peers-linear-*.md). Linear layers are most of a small
model's training step, so `parallel.cpu_linear=auto` routes them through
oneDNN: forward, input gradient and weight gradient, all in float32 with
float32 accumulation (the results differ from MKL's in rounding only).

Applied from outside the model code: `apply_cpu_linear` turns every
`nn.Linear` into `Linear` (same parameters, same state dict) and switches
`linear`, which the core's own heads call, for the whole process, as
`torch.backends` flags do. Anything not float32 on CPU (bf16 autocast, CUDA,
float64 tests) takes `F.linear` as before.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODES = ("auto", "onednn", "aten")
_use_onednn = False


def onednn_available() -> Optional[str]:
    """None if oneDNN's linear runs here, else why not (one line)."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this torch has no torch.ops.mkldnn._linear_pointwise"
    try:
        x = torch.ones(2, 3)
        torch.ops.mkldnn._linear_pointwise(x, torch.ones(4, 3), None, "none", [], "")
    except Exception as e:  # noqa: BLE001 - any failure means: use aten
        return f"oneDNN linear failed ({type(e).__name__})"
    return None


def set_cpu_linear(mode: str) -> Optional[str]:
    """Choose the backend of `linear` on CPU float32; returns why oneDNN is off, or None."""
    global _use_onednn
    why_not = None if mode == "aten" else onednn_available()
    _use_onednn = mode != "aten" and why_not is None
    return why_not


@torch.library.custom_op("zoo_core::onednn_linear", mutates_args=())
def _linear_op(a: Tensor, b_t: Tensor, bias: Optional[Tensor]) -> Tensor:
    # An opaque op for torch.compile: inductor's own lowering of _linear_pointwise
    # expects the weight prepacked by its freezing pass.
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


@_linear_op.register_fake
def _(a, b_t, bias):
    return a.new_empty(a.shape[0], b_t.shape[0])


def _mm(a: Tensor, b_t: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """a @ b_t.T (+ bias) through oneDNN; b_t in F.linear's (out, in) layout."""
    if torch.compiler.is_compiling():
        return _linear_op(a, b_t, bias)
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")  # no dispatch overhead


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        return _mm(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, gy: Tensor):
        x2, weight = ctx.saved_tensors
        g2 = gy.reshape(-1, gy.shape[-1])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _mm(g2, weight.t()).view(*gy.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            # dW = g^T x reduces over tokens; oneDNN is faster with the wider
            # of the two matrices as its "output features" (measured).
            out_f, in_f = weight.shape
            gw = _mm(x2.t(), g2.t()).t() if out_f >= in_f else _mm(g2.t(), x2.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """`F.linear`, through oneDNN for float32 on CPU when `set_cpu_linear` chose it."""
    if (_use_onednn and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.shape[-1] > 0 and not torch.is_autocast_enabled("cpu")):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` whose forward is `linear`; `apply_cpu_linear` swaps it in."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


def apply_cpu_linear(model: nn.Module, mode: str) -> Optional[str]:
    """Route the model's linear layers as `mode` says; returns why oneDNN is off, or None."""
    why_not = set_cpu_linear(mode)
    if mode != "aten":
        for module in model.modules():
            if type(module) is nn.Linear:  # exactly: subclasses may have their own forward
                module.__class__ = Linear
    return why_not
