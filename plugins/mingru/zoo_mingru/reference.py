"""minGRU and minLSTM as the paper writes them, one time step at a time.

The definition the fast path (one scan) and `step` are tested against. It
reads the mixer's weights but none of its code paths: sigmoids, divisions and
the recurrence appear literally, as in Feng et al. 2024 (arXiv 2410.01201).
"""

from __future__ import annotations

import torch
from torch import Tensor

from zoo_mingru.common import MinRNN


def naive_conv(x: Tensor, weight: Tensor, prev: Tensor, resets: Tensor | None = None) -> Tensor:
    """y_t[c] = sum_j weight[c, j] * x_{t-k+1+j}[c], inputs before t=0 taken from prev, and
    inputs from before t's document (a reset after them, at or before t) taken as 0."""
    k = weight.shape[1]
    xs = torch.cat([prev, x], dim=1)  # position t of x sits at t + k - 1
    ys = []
    for t in range(x.shape[1]):
        window = xs[:, t : t + k].clone()  # positions t-k+1 .. t
        for b in range(x.shape[0]):
            for s in range(max(t - k + 2, 0), t + 1) if resets is not None else ():
                if resets[b, s]:  # a document starts at s: what came before is another document
                    window[b, : s - (t - k + 1)] = 0
        ys.append((window * weight.t()).sum(1))
    return torch.stack(ys, dim=1)


def g(v: Tensor) -> Tensor:
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def naive_min_rnn(m: MinRNN, x: Tensor, state: dict[str, Tensor] | None = None, resets: Tensor | None = None) -> Tensor:
    """The mixer's output for x (B, T, dim), starting from `state` (None: zeros); where
    resets (B, T) is True a document starts: h_{t-1} counts as zero and the conv sees
    nothing before t."""
    B, T, _ = x.shape
    H, cfg = m.hidden, m.config
    state = state if state is not None else m.init_state(B, x.device, x.dtype)
    proj = x @ m.in_proj.weight.t()
    gates, cand = proj[..., : m.n_gates * H], proj[..., m.n_gates * H : m.n_gates * H + H]
    if m.conv is not None:
        gates = naive_conv(gates, m.conv.weight, state["conv"].to(x.dtype), resets)
    h = state["h"].to(x.dtype)
    hs = []
    for t in range(T):
        if resets is not None:
            h = torch.where(resets[:, t, None], torch.zeros_like(h), h)
        h_tilde = g(cand[:, t]) if cfg.log_space else cand[:, t]
        if m.label == "mingru":
            z = torch.sigmoid(gates[:, t])
            h = (1 - z) * h + z * h_tilde
        else:  # minlstm
            f, i = torch.sigmoid(gates[:, t, :H]), torch.sigmoid(gates[:, t, H:])
            f, i = f / (f + i), i / (f + i)
            h = f * h + i * h_tilde
        hs.append(h)
    y = torch.stack(hs, dim=1)
    if cfg.out_gate:
        o = proj[..., m.n_gates * H + H :]
        y = y * (o * torch.sigmoid(o))
    return y @ m.out_proj.weight.t()
