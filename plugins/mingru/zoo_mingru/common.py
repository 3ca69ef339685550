"""What minGRU and minLSTM share: projections, optional conv and output gate,
the parallel scan (fast path), the recurrent step, state and accounting.

Both are h_t = a_t * h_{t-1} + w_t * v_t with gates that depend on x_t only,
so the whole sequence is one scan (zoo-kernels). A subclass says how its
gate pre-activations give log a_t and log w_t (`log_coefficients`).

Paper: Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201.
Lingua's variants add a width-4 causal conv over the gate pre-activations, a
SiLU output gate and an expansion of 2 (and drop the block's MLP).

Documents (`resets`, True where a document starts): the conv sees no input before the
start and the scan's decay is zero there (h_t = w_t v_t), on every path (the naive loop,
the scans, `step(reset=)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.errors import UserError
from zoo_core.interfaces import Mixer
from zoo_kernels import linear_scan, log_linear_scan
from zoo_kernels.conv import CausalConv


@dataclass
class MinRNNConfig:
    #: Hidden (state) width as a multiple of dim.
    expand: float = 1.0
    #: Width of a causal depthwise conv over the gate pre-activations (Lingua uses 4); 0 = none.
    conv: int = 0
    #: Multiply h by SiLU(W x) before the output projection (Lingua's variant).
    out_gate: bool = False
    #: The paper's log-space version: candidate g(W x) > 0, Heinsen's log scan.
    #: False: the plain version, candidate W x and a linear scan.
    log_space: bool = True


def g(x: Tensor) -> Tensor:
    """The paper's positive activation: x + 0.5 for x >= 0, sigmoid(x) below (continuous at 0)."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    # relu keeps the unused branch finite, so where() has no NaN gradient.
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), F.logsigmoid(x))


class MinRNN(Mixer):
    #: Gate pre-activations per hidden channel (1 for minGRU's z; 2 for minLSTM's f, i).
    n_gates: int = 1
    label: str = "minrnn"
    supports_resets = True

    def __init__(self, dim: int, config: MinRNNConfig) -> None:
        super().__init__(dim, config)
        if config.expand <= 0:
            raise UserError(f"{self.label} expand={config.expand} must be positive, e.g. expand=2")
        if config.conv < 0:
            raise UserError(f"{self.label} conv={config.conv} must be a width >= 1, or 0 for no conv")
        self.hidden = max(1, round(config.expand * dim))
        H = self.hidden
        self.n_gate_ch = self.n_gates * H
        # one matmul for gates, candidate and (optionally) the output gate
        self.in_proj = nn.Linear(dim, self.n_gate_ch + H + (H if config.out_gate else 0), bias=False)
        self.conv = CausalConv(self.n_gate_ch, config.conv) if config.conv else None
        self.out_proj = nn.Linear(H, dim, bias=False)

    # -- per-architecture gates --------------------------------------------------------
    def log_coefficients(self, gates: Tensor) -> tuple[Tensor, Tensor]:
        """Gate pre-activations (..., n_gates*H) -> (log a, log w), each (..., H)."""
        raise NotImplementedError

    # -- shared pieces -------------------------------------------------------------------
    def _split(self, x: Tensor):
        H, n = self.hidden, self.n_gate_ch
        proj = self.in_proj(x)
        og = proj[..., n + H :] if self.config.out_gate else None
        return proj[..., :n], proj[..., n : n + H], og

    def _acc(self, x: Tensor) -> torch.dtype:
        return torch.promote_types(x.dtype, torch.float32)

    def _out(self, h: Tensor, og: Tensor | None, dtype: torch.dtype) -> Tensor:
        y = h.to(dtype)
        if og is not None:
            y = y * F.silu(og)
        return self.out_proj(y)

    # -- fast path: one scan over the sequence --------------------------------------------------
    def forward(self, x: Tensor, state: dict | None = None, return_state: bool = False, resets: Tensor | None = None):
        gates, cand, og = self._split(x)
        conv_state = None
        if self.conv is not None:
            gates, conv_state = self.conv(gates, None if state is None else state["conv"], resets=resets)
        acc = self._acc(x)
        log_a, log_w = self.log_coefficients(gates.to(acc))
        h0 = None if state is None else state["h"].to(acc)
        if self.config.log_space:
            # h stays positive; tiny keeps log finite if a carried h underflowed to 0
            log_h0 = None if h0 is None else torch.log(h0.clamp_min(torch.finfo(acc).tiny))
            log_h, log_last = log_linear_scan(log_a, log_w + log_g(cand.to(acc)), log_h0, resets=resets)
            h, h_last = log_h.exp(), log_last.exp()
        else:
            h, h_last = linear_scan(log_a.exp(), log_w.exp() * cand.to(acc), h0, resets=resets)
        y = self._out(h, og, x.dtype)
        return y, (self._state(h_last, conv_state) if return_state else None)

    # -- recurrent step ----------------------------------------------------------------------------
    def step(self, x: Tensor, state: dict[str, Tensor], reset: Tensor | None = None):
        gates, cand, og = self._split(x)
        conv_state = None
        if self.conv is not None:
            gates, conv_state = self.conv.step(gates, state["conv"], reset=reset)
        acc = self._acc(x)
        log_a, log_w = self.log_coefficients(gates.to(acc))
        v = g(cand.to(acc)) if self.config.log_space else cand.to(acc)
        a = log_a.exp()
        if reset is not None:  # rows whose document starts here: no decay of the old state
            a = a.masked_fill(reset[:, None], 0.0)
        h = a * state["h"].to(acc) + log_w.exp() * v
        return self._out(h, og, x.dtype), self._state(h, conv_state)

    # -- state --------------------------------------------------------------------------------------
    def _state(self, h: Tensor, conv_state: Tensor | None) -> dict[str, Tensor]:
        return {"h": h} if conv_state is None else {"h": h, "conv": conv_state}

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> dict[str, Tensor]:
        w = self.in_proj.weight
        device, dtype = device or w.device, dtype or w.dtype
        h = torch.zeros(batch_size, self.hidden, device=device, dtype=torch.promote_types(dtype, torch.float32))
        conv = None if self.conv is None else self.conv.init_state(batch_size, device, dtype)
        return self._state(h, conv)

    # -- accounting -----------------------------------------------------------------------------------
    def flops_per_token(self, seq_len: int) -> float:
        # matmuls at 2 per multiply-add; gates, activation and scan at ~1 per elementwise op
        proj = 2.0 * self.dim * self.in_proj.out_features + 2.0 * self.hidden * self.dim
        conv = self.conv.flops_per_token() if self.conv is not None else 0.0
        elementwise = 8.0 * self.hidden * self.n_gates + 4.0 * self.hidden  # gates, g, a*h + w*v
        if self.config.out_gate:
            elementwise += 5.0 * self.hidden
        return proj + conv + elementwise

    def state_size(self, seq_len: int) -> int:
        elem = self.in_proj.weight.element_size()
        h = self.hidden * max(elem, 4)  # h is kept in float32 (or float64)
        conv = (self.conv.width - 1) * self.n_gate_ch * elem if self.conv is not None else 0
        return h + conv
