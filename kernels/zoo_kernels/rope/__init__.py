"""RoPE's rotation (Su et al. 2021): pairs (x[2i], x[2i+1]) of each head's first R dims rotated
by the angle whose cos and sin are given per (batch, time); the rest pass.

    rotary(x, cos, sin, heads_first=False)
                            x (B, T, H, D), cos and sin (B, T, R/2) -> (B, T, H, D) contiguous,
                            or with heads_first (B, H, T, D) contiguous (attention's layout)

On CPU (x float32, bfloat16 or float64; cos, sin float32, float64 with float64 x) the custom op
runs rope/rotary.c (rope/cpu.py): one pass forward, one backward (the opposite rotation), no
copies to float32 and back. Elsewhere, with backend="naive" or ZOO_KERNELS_CPP=0, rope/naive.py
through autograd. cos and sin get no gradient (positions carry none).
"""

from __future__ import annotations

from torch import Tensor

from .._custom_op import define
from . import cpu, naive


def _rotary(x: Tensor, cos: Tensor, sin: Tensor, heads_first: bool) -> Tensor:
    return cpu.rotate(x, cos.contiguous(), sin.contiguous(), heads_first=heads_first)


def _rotary_fake(x, cos, sin, heads_first):
    B, T, H, D = x.shape
    return x.new_empty((B, H, T, D) if heads_first else (B, T, H, D))


def _rotary_bwd(dy: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """dy as (B, T, H, D) (any strides, contiguous D) rotated back, (B, T, H, D) contiguous."""
    return cpu.rotate(dy, cos.contiguous(), sin.contiguous(), sign=-1)


_rotary_bwd_op = define("rotary_backward", _rotary_bwd, lambda dy, cos, sin: dy.new_empty(dy.shape))


def _setup(ctx, inputs, output):
    _, cos, sin, heads_first = inputs
    ctx.save_for_backward(cos, sin)
    ctx.heads_first = heads_first


def _backward(ctx, dy):
    cos, sin = ctx.saved_tensors
    dy = dy.transpose(1, 2) if ctx.heads_first else dy  # (B, T, H, D), as x
    dy = dy if dy.stride(-1) == 1 else dy.contiguous()
    return _rotary_bwd_op(dy, cos, sin), None, None, None


_rotary_op = define("rotary", _rotary, _rotary_fake, backward=_backward, setup=_setup)


def rotary(x: Tensor, cos: Tensor, sin: Tensor, heads_first: bool = False, backend: str = "auto") -> Tensor:
    """x (B, T, H, D) with pairs of its first 2 * cos.shape[-1] dims rotated; x's dtype. With
    heads_first the result is (B, H, T, D) (contiguous on the compiled path)."""
    if 2 * cos.shape[-1] > x.shape[-1] or cos.shape != sin.shape or cos.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"zoo-kernels rotary: cos, sin {tuple(cos.shape)}, {tuple(sin.shape)} do not fit x {tuple(x.shape)}"
        )
    if backend != "naive" and cpu.usable(x, cos):
        return _rotary_op(x, cos, sin, heads_first)
    y = naive.rotary(x, cos, sin)
    return y.transpose(1, 2) if heads_first else y
