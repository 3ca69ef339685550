"""The gated activation of GLU MLPs and gate branches: y = act(gate) * value.

    glu(h, act)            h = [gate, value], the two halves of its last dim (SwiGLU / GeGLU's
                           one matmul for both): returns act(gate) * value, its gradient one tensor
    gated(gate, value, act) the same over two tensors (Griffin's GeLU gate branch)

act is "silu" or "gelu_tanh". On CPU (float32, float64, bfloat16) both run the compiled
kernel in glu/glu.c (glu/cpu.py): one pass forward, one backward that recomputes act(gate),
so nothing but the inputs is saved. Elsewhere, and with backend="naive" or ZOO_KERNELS_CPP=0,
they run glu/naive.py through autograd. Each is a custom op (one node under torch.compile).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._custom_op import define
from . import cpu, naive

ACTIVATIONS = naive.ACTIVATIONS


def _rows(t: Tensor) -> Tensor:
    """t as (rows, last dim) with contiguous rows: a view when its last dim is contiguous and the
    leading dims collapse (the half of a wider tensor does), else a copy."""
    return (t if t.stride(-1) == 1 else t.contiguous()).reshape(-1, t.shape[-1])


# ---- glu(h): the halves of one tensor --------------------------------------------------------


def _glu(h: Tensor, act: str) -> Tensor:
    h2, n = _rows(h), h.shape[-1] // 2
    return cpu.forward(h2[:, :n], h2[:, n:], act, (*h.shape[:-1], n))


def _glu_bwd(h: Tensor, dy: Tensor, act: str) -> Tensor:
    h2, n = _rows(h), h.shape[-1] // 2
    dh = torch.empty(h.shape, dtype=h.dtype)
    dh2 = dh.view(h2.shape)
    cpu.backward(h2[:, :n], h2[:, n:], _rows(dy), dh2[:, :n], dh2[:, n:], act)
    return dh


_glu_bwd_op = define("glu_backward", _glu_bwd, lambda h, dy, act: h.new_empty(h.shape))


def _glu_setup(ctx, inputs, output):
    h, act = inputs
    ctx.save_for_backward(h)
    ctx.act = act


def _glu_backward(ctx, dy):
    (h,) = ctx.saved_tensors
    return _glu_bwd_op(h, dy, ctx.act), None


_glu_op = define(
    "glu",
    _glu,
    lambda h, act: h.new_empty(*h.shape[:-1], h.shape[-1] // 2),
    backward=_glu_backward,
    setup=_glu_setup,
)


def glu(h: Tensor, act: str = "silu", backend: str = "auto") -> Tensor:
    """act(gate) * value over h = [gate, value] (its last dim, split in halves)."""
    _check(act, h.shape[-1] % 2 == 0, f"glu: the last dim of h ({h.shape[-1]}) must be even")
    if backend != "naive" and cpu.usable(h):
        return _glu_op(h, act)
    gate, value = h.chunk(2, dim=-1)
    return naive.gated(gate, value, act)


# ---- gated(gate, value): two tensors -------------------------------------------------------


def _gated(gate: Tensor, value: Tensor, act: str) -> Tensor:
    return cpu.forward(_rows(gate), _rows(value), act, tuple(gate.shape))


def _gated_bwd(gate: Tensor, value: Tensor, dy: Tensor, act: str) -> tuple[Tensor, Tensor]:
    dg, dv = torch.empty(gate.shape, dtype=gate.dtype), torch.empty(value.shape, dtype=value.dtype)
    cpu.backward(_rows(gate), _rows(value), _rows(dy), _rows(dg), _rows(dv), act)
    return dg, dv


def _gated_bwd_fake(gate, value, dy, act):
    return gate.new_empty(gate.shape), value.new_empty(value.shape)


_gated_bwd_op = define("gated_backward", _gated_bwd, _gated_bwd_fake)


def _gated_setup(ctx, inputs, output):
    gate, value, act = inputs
    ctx.save_for_backward(gate, value)
    ctx.act = act


def _gated_backward(ctx, dy):
    gate, value = ctx.saved_tensors
    dg, dv = _gated_bwd_op(gate, value, dy, ctx.act)
    return dg, dv, None


_gated_op = define(
    "gated",
    _gated,
    lambda gate, value, act: gate.new_empty(gate.shape),
    backward=_gated_backward,
    setup=_gated_setup,
)


def gated(gate: Tensor, value: Tensor, act: str = "silu", backend: str = "auto") -> Tensor:
    """act(gate) * value, gate and value of one shape."""
    _check(act, gate.shape == value.shape, f"gated: gate {tuple(gate.shape)} and value {tuple(value.shape)} differ")
    if backend != "naive" and cpu.usable(gate, value):
        return _gated_op(gate, value, act)
    return naive.gated(gate, value, act)


def _check(act: str, ok: bool, why: str) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"zoo-kernels: activation '{act}' is not one of {', '.join(ACTIVATIONS)}")
    if not ok:
        raise ValueError(f"zoo-kernels: {why}")
