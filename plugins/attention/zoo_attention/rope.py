"""Rotary position embedding (RoPE, Su et al. 2021, arXiv 2104.09864).

    w_i = theta^(-2i / d),  i = 0 .. d/2 - 1                 d: the rotated dims of a head
    (x'_{2i}, x'_{2i+1}) = R(pos * w_i) (x_{2i}, x_{2i+1})     R(a): rotation by angle a
    i.e. x'_{2i} + j x'_{2i+1} = (x_{2i} + j x_{2i+1}) exp(j pos w_i)

so q_m . k_n depends on m - n only. With partial RoPE (rope_fraction < 1) the first d dims
of each head rotate and the rest pass. Two forms of the same rotation: `rope` (the reference,
the equation in real arithmetic) and `rope_cis` + `rotate` (the fast form: angles once per
forward, one complex multiplication over q and k; under torch.compile the real form, which
inductor fuses and which needs no complex codegen; on CPU, zoo-kernels' one-pass `rotary`).
For the training step these forms sit in, see the attention rows of
benchmarks/results/peers-paired-*.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from zoo_kernels.rope import cpu as rotary_cpu
from zoo_kernels.rope import rotary


def rope(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """The reference, on (B, H, T, hd), positions (B, T): pairs (x[2i], x[2i+1]) rotated by
    angle pos * theta^(-2i/hd), computed in at least float32 (float64 stays float64)."""
    hd = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    work = torch.promote_types(x.dtype, torch.float32)
    angles = positions.to(work)[:, None, :, None] * inv_freq.to(work)  # (B, 1, T, hd/2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.to(work)[..., 0::2], x.to(work)[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.type_as(x)


@torch.library.custom_op("zoo_attention::cos_sin", mutates_args=())
def cos_sin(angles: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin as an opaque op: left to itself, inductor inlines them into every
    consumer, and takes them per element of q and k (and again in the backward) rather
    than once per (position, frequency). Positions carry no gradient, so neither does this."""
    return angles.cos(), angles.sin()


@cos_sin.register_fake
def _(angles):
    return torch.empty_like(angles), torch.empty_like(angles)


def rope_angles(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> Tensor:
    """pos * theta^(-2j/hd) as (B, T, hd/2), in at least float32 (the frequencies in float32)."""
    work = torch.promote_types(dtype, torch.float32)
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    return positions.to(work)[:, :, None] * inv_freq.to(work)


def rope_cis(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """exp(i * pos * theta^(-2j/hd)) as (B, T, 1, hd/2), at least complex64; under
    torch.compile its (cos, sin) pair instead."""
    angles = rope_angles(positions, head_dim, theta, dtype)[:, :, None]
    if torch.compiler.is_compiling():
        return cos_sin(angles)
    return torch.polar(torch.ones_like(angles), angles)


def rotate(x: Tensor, cis) -> Tensor:
    """x (B, T, H, hd) with each pair (x[2i], x[2i+1]) rotated; same dtype as x."""
    if isinstance(cis, tuple):
        cos, sin = cis
        x1, x2 = x.to(cos.dtype)[..., 0::2], x.to(cos.dtype)[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)
    pairs = torch.view_as_complex(x.to(cis.real.dtype).unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * cis).flatten(-2).type_as(x)


def first_dims(fn: Callable[[Tensor], Tensor], t: Tensor, n: int) -> Tensor:
    """fn on the first n dims of t's last axis, the rest passed through (partial RoPE)."""
    return fn(t) if n == t.shape[-1] else torch.cat([fn(t[..., :n]), t[..., n:]], dim=-1)


def rope_qk(
    q: Tensor, k: Tensor, positions: Tensor, n_rot: int, theta: float, dtype: torch.dtype, reference: bool = False
) -> tuple[Tensor, Tensor]:
    """q, k (B, T, heads, hd) -> (B, heads, T, hd), the first n_rot dims of each head rotated.
    `reference`: the equation (`rope`), else the fast form with angles in `dtype`'s work precision."""
    if reference:
        return tuple(first_dims(lambda u: rope(u, positions, theta), t.transpose(1, 2), n_rot) for t in (q, k))
    if q.device.type == "cpu" and not torch.compiler.is_compiling():
        # zoo-kernels' one-pass rotation (no float32 round trip for bf16 q, k), where it runs
        angles = rope_angles(positions, n_rot, theta, dtype)
        cos, sin = angles.cos(), angles.sin()
        if rotary_cpu.usable(q, cos) and rotary_cpu.usable(k, cos):
            return tuple(rotary(t, cos, sin, heads_first=True) for t in (q, k))  # (B, heads, T, hd), contiguous
    cis = rope_cis(positions, n_rot, theta, dtype)
    return tuple(first_dims(lambda u: rotate(u, cis), t, n_rot).transpose(1, 2) for t in (q, k))
