"""Hawk as the Griffin paper writes it, one time step at a time.

The definition the fast path (the zoo-kernels RG-LRU scan) and `step` are
tested against. It reads the mixer's weights but none of its code paths: the
decay is the paper's a_t = sigmoid(Lambda) ** (c r_t), not its log form.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from zoo_hawk.mixer import Hawk


def naive_conv(x: Tensor, weight: Tensor, bias: Tensor, prev: Tensor, resets: Tensor | None = None) -> Tensor:
    """y_t[c] = b[c] + sum_j weight[c, j] * x_{t-k+1+j}[c], inputs before t=0 taken from prev;
    inputs before the document start of t (the last reset at or before t) taken as zero."""
    B, T, _ = x.shape
    k = weight.shape[1]
    xs = torch.cat([prev, x], dim=1)
    begin = torch.full((B,), -k)  # each row's document start so far: before prev, all inputs count
    ys = []
    for t in range(T):
        if resets is not None:
            begin = torch.where(resets[:, t], t, begin)
        keep = torch.arange(t - k + 1, t + 1)[None] >= begin[:, None]  # (B, k): the window's positions
        ys.append(bias + (xs[:, t : t + k] * keep[..., None] * weight.t()).sum(1))
    return torch.stack(ys, dim=1)


def gelu(x: Tensor) -> Tensor:
    """GeLU, tanh approximation."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def naive_hawk(m: Hawk, x: Tensor, state: dict[str, Tensor] | None = None, resets: Tensor | None = None) -> Tensor:
    """Hawk's output; resets (B, T) True where a document starts: the conv sees nothing before
    it and the RG-LRU resets there as RecurrentGemma does (a_t = 0, multiplier 1)."""
    B, T, _ = x.shape
    H, c = m.hidden, m.config.c
    state = state if state is not None else m.init_state(B, x.device, x.dtype)
    w_gate, w_u = m.in_proj.weight[:H], m.in_proj.weight[H:]
    b_gate, b_u = (None, None) if m.in_proj.bias is None else (m.in_proj.bias[:H], m.in_proj.bias[H:])
    gate = gelu(x @ w_gate.t() + (0 if b_gate is None else b_gate))  # branch 1
    u = naive_conv(
        x @ w_u.t() + (0 if b_u is None else b_u), m.conv.weight, m.conv.bias, state["conv"].to(x.dtype), resets
    )  # branch 2
    if m.config.gate_heads is None:
        w_a, w_x = m.gate_proj.weight[:H], m.gate_proj.weight[H:]
        b_a, b_x = m.gate_proj.bias[:H], m.gate_proj.bias[H:]
    else:  # the block-diagonal gates written out as the dense matrices they are
        w_a, w_x = (torch.block_diag(*m.gate_weight[g].transpose(-1, -2)) for g in (0, 1))
        b_a, b_x = m.gate_bias[:H], m.gate_bias[H:]
    base = torch.sigmoid(m.a_param)  # sigmoid(Lambda)
    h = state["h"].to(x.dtype)
    start = state.get("start", torch.zeros(B, dtype=torch.bool)) if m.config.reset_at_start else None
    hs = []
    for t in range(T):
        r = torch.sigmoid(u[:, t] @ w_a.t() + b_a)
        i = torch.sigmoid(u[:, t] @ w_x.t() + b_x)
        a = base ** (c * r)
        begins = torch.zeros(B, dtype=torch.bool) if resets is None else resets[:, t]
        if start is not None and t == 0:  # reset_at_start: the stream's first token
            begins = begins | start
        if begins.any():  # a document start: h_t = i_t u_t
            a = torch.where(begins[:, None], torch.zeros_like(a), a)
            mult = torch.where(begins[:, None], torch.ones_like(a), torch.sqrt(1 - a**2))
        else:
            mult = torch.sqrt(1 - a**2)
        h = a * h + mult * (i * u[:, t])
        hs.append(h)
    y = (gate * torch.stack(hs, dim=1)) @ m.out_proj.weight.t()
    return y if m.out_proj.bias is None else y + m.out_proj.bias
