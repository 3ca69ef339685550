"""Hawk: the recurrent block of Griffin (De et al. 2024, arXiv 2402.19427).

    gate = GeLU(W_g x)                               branch 1
    u    = Conv4(W_u x)                              branch 2: temporal conv, width 4
    r_t  = sigmoid(W_a u_t + b_a)                    recurrence gate
    i_t  = sigmoid(W_x u_t + b_x)                    input gate
    a_t  = sigmoid(Lambda) ** (c r_t),  c = 8
    h_t  = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t u_t)   RG-LRU
    y    = W_o (gate * h)

Lambda is initialised so that sigmoid(Lambda)^2 is uniform in [0.9^2, 0.999^2]
(uniform over the ring, as in the LRU paper). The kernel computes
log a_t = -c r_t softplus(-Lambda), which is c r_t log sigmoid(Lambda):
Lambda is stored as itself, with no extra transform (the Lingua pitfall).

Three paths: naive (`reference.naive_hawk`, a loop over t), fast (zoo-kernels
`rg_lru` scan) and `step`.

Documents (`resets`, True where a document starts): the conv sees no input before the
start, and the RG-LRU resets as RecurrentGemma does (a_t = 0 and multiplier 1: h_t =
i_t u_t), on all three paths. `reset_at_start` is the same reset at a stream's first token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.errors import UserError
from zoo_core.interfaces import Mixer
from zoo_kernels import rg_lru
from zoo_kernels.conv import CausalConv
from zoo_kernels.glu import gated


@dataclass
class HawkConfig:
    #: RNN width as a multiple of dim (Griffin uses about 4/3).
    expand: float = 1.3333
    #: Temporal conv width before the RG-LRU (Griffin: 4).
    conv: int = 4
    #: The RG-LRU's fixed scale c in a_t = sigmoid(Lambda)^(c r_t).
    c: float = 8.0
    #: Range of the base decay sigmoid(Lambda) at initialisation.
    decay_min: float = 0.9
    decay_max: float = 0.999
    #: Block-diagonal r and i gate projections in this many blocks (RecurrentGemma's, one per
    #: attention head); None: dense, as the paper's equations.
    gate_heads: int | None = None
    #: Biases on the in and out projections (RecurrentGemma has them).
    bias: bool = False
    #: A stream's first token (no carried state: a document start) enters with multiplier 1,
    #: h_0 = i_0 u_0, instead of sqrt(1 - a_0^2) i_0 u_0: RecurrentGemma's reset at position 0.
    reset_at_start: bool = False


def resets_tail(resets: Tensor | None, x: Tensor) -> Tensor:
    """resets[:, 1:], or no start after the first token when resets is None."""
    if resets is None:
        return torch.zeros(x.shape[0], x.shape[1] - 1, dtype=torch.bool, device=x.device)
    return resets[:, 1:]


def init_decay_param(n: int, lo: float, hi: float, generator: torch.Generator | None = None) -> Tensor:
    """Lambda with sigmoid(Lambda)^2 ~ U[lo^2, hi^2], i.e. Lambda = logit(sqrt(u))."""
    u = torch.rand(n, dtype=torch.float64, generator=generator) * (hi**2 - lo**2) + lo**2
    a = u.sqrt()
    return torch.log(a) - torch.log1p(-a)


class Hawk(Mixer):
    supports_resets = True

    def __init__(self, dim: int, config: HawkConfig) -> None:
        super().__init__(dim, config)
        if config.expand <= 0:
            raise UserError(f"hawk expand={config.expand} must be positive, e.g. expand=1.3333")
        if config.conv < 1:
            raise UserError(f"hawk conv={config.conv} must be a width >= 1 (Griffin uses 4)")
        if not 0 < config.decay_min <= config.decay_max < 1:
            raise UserError(
                f"hawk decay range [{config.decay_min}, {config.decay_max}] must satisfy "
                f"0 < decay_min <= decay_max < 1, e.g. decay_min=0.9 decay_max=0.999"
            )
        self.hidden = H = max(1, round(config.expand * dim))
        n = config.gate_heads
        if n is not None and (n < 1 or H % n):
            raise UserError(
                f"hawk gate_heads={n} must divide the RNN width {H} (expand * dim); "
                f"pick a divisor or set model.mixer.expand so that it divides"
            )
        self.in_proj = nn.Linear(dim, 2 * H, bias=config.bias)  # gate branch and recurrent branch
        self.conv = CausalConv(H, config.conv, bias=True)
        if n is None:
            self.gate_proj = nn.Linear(H, 2 * H, bias=True)  # r and i pre-activations
        else:  # per block (input, output), r then i: RecurrentGemma's recurrent/input_gate_weight
            self.gate_weight = nn.Parameter(torch.empty(2, n, H // n, H // n))
            self.gate_bias = nn.Parameter(torch.empty(2 * H))
        self.a_param = nn.Parameter(torch.empty(H))  # Lambda
        self.out_proj = nn.Linear(H, dim, bias=config.bias)
        self._init_decay()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._init_decay()

    @torch.no_grad()
    def _init_decay(self) -> None:
        cfg = self.config
        lam = init_decay_param(self.hidden, cfg.decay_min, cfg.decay_max)
        self.a_param.copy_(lam.to(self.a_param.dtype))
        if cfg.gate_heads is not None:  # nn.Linear's default bound, per block
            bound = 1 / math.sqrt(self.gate_weight.shape[-2])
            nn.init.uniform_(self.gate_weight, -bound, bound)
            nn.init.uniform_(self.gate_bias, -bound, bound)

    def gates(self, u: Tensor):
        """The r and i pre-activations from the conv output u (..., H)."""
        if self.config.gate_heads is None:
            return self.gate_proj(u).chunk(2, dim=-1)
        blocks = u.unflatten(-1, self.gate_weight.shape[1:3])  # (..., n, H/n)
        out = torch.einsum("...nk,gnkj->g...nj", blocks, self.gate_weight.to(u.dtype)).flatten(-2)
        r, i = out + self.gate_bias.to(u.dtype).view(2, *([1] * (u.dim() - 1)), -1)
        return r, i

    def _first(self, u: Tensor, r_pre: Tensor, i_pre: Tensor, h0: Tensor | None, start: Tensor) -> Tensor:
        """h after one token; rows where `start` is set begin a document: no decay of h0 and
        input multiplier 1 (RecurrentGemma's reset), the others the ordinary RG-LRU step."""
        acc = torch.promote_types(u.dtype, torch.float32)
        r, i = torch.sigmoid(r_pre.to(acc)), torch.sigmoid(i_pre.to(acc))
        log_a = -self.config.c * r * F.softplus(-self.a_param.to(acc))
        x = i * u.to(acc)
        h_prev = torch.zeros_like(x) if h0 is None else h0.to(acc)
        stepped = log_a.exp() * h_prev + torch.sqrt(-torch.expm1(2 * log_a)) * x
        return torch.where(start[:, None], x, stepped)

    # -- fast path ----------------------------------------------------------------------------
    def forward(self, x: Tensor, state: dict | None = None, return_state: bool = False, resets: Tensor | None = None):
        gate_pre, u = self.in_proj(x).chunk(2, dim=-1)
        u, conv_state = self.conv(u, None if state is None else state["conv"], resets=resets)
        r_pre, i_pre = self.gates(u)
        h0 = None if state is None else state["h"]
        new = {}
        if self.config.reset_at_start:  # the rows whose first token starts a document reset there
            start = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if state is None else state["start"]
            first = start if resets is None else start | resets[:, 0]
            resets = torch.cat([first[:, None], resets_tail(resets, x)], 1)
            new["start"] = torch.zeros_like(start)
        h, h_last = rg_lru(u, r_pre, i_pre, self.a_param, self.config.c, h0, resets=resets)
        y = self.out_proj(gated(gate_pre, h.to(x.dtype), "gelu_tanh"))  # GeLU(gate) * h, fused on CPU
        return y, ({"h": h_last, "conv": conv_state, **new} if return_state else None)

    # -- recurrent step ------------------------------------------------------------------------------
    def step(self, x: Tensor, state: dict[str, Tensor], reset: Tensor | None = None):
        gate_pre, u = self.in_proj(x).chunk(2, dim=-1)
        u, conv_state = self.conv.step(u, state["conv"], reset=reset)
        r_pre, i_pre = self.gates(u)
        start = state["start"] if self.config.reset_at_start else None
        if reset is not None:
            start = reset if start is None else start | reset
        if start is not None:  # rows that start a document: h = i u
            h = self._first(u, r_pre, i_pre, state["h"], start)
            y = self.out_proj(F.gelu(gate_pre, approximate="tanh") * h.to(x.dtype))
            new = {"start": torch.zeros_like(state["start"])} if self.config.reset_at_start else {}
            return y, {"h": h, "conv": conv_state, **new}
        acc = torch.promote_types(x.dtype, torch.float32)
        r, i = torch.sigmoid(r_pre.to(acc)), torch.sigmoid(i_pre.to(acc))
        log_a = -self.config.c * r * F.softplus(-self.a_param.to(acc))  # c r log sigmoid(Lambda)
        h = log_a.exp() * state["h"].to(acc) + torch.sqrt(-torch.expm1(2 * log_a)) * (i * u.to(acc))
        y = self.out_proj(F.gelu(gate_pre, approximate="tanh") * h.to(x.dtype))
        return y, {"h": h, "conv": conv_state}

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> dict[str, Tensor]:
        w = self.in_proj.weight
        device, dtype = device or w.device, dtype or w.dtype
        h = torch.zeros(batch_size, self.hidden, device=device, dtype=torch.promote_types(dtype, torch.float32))
        state = {"h": h, "conv": self.conv.init_state(batch_size, device, dtype)}
        if self.config.reset_at_start:  # per row: the next token starts a document
            state["start"] = torch.ones(batch_size, dtype=torch.bool, device=device)
        return state

    # -- accounting ------------------------------------------------------------------------------------
    def flops_per_token(self, seq_len: int) -> float:
        H, D = self.hidden, self.dim
        matmuls = 2.0 * D * 2 * H + 2.0 * H * 2 * H + 2.0 * H * D  # in, gates, out
        # RG-LRU at ~1 FLOP per elementwise op: 2 sigmoids, decay, sqrt(1-a^2), a*h + b*(i*u);
        # GeLU gate and product
        elementwise = 14.0 * H + 9.0 * H
        return matmuls + self.conv.flops_per_token() + elementwise

    def state_size(self, seq_len: int) -> int:
        elem = self.in_proj.weight.element_size()
        return self.hidden * max(elem, 4) + (self.conv.width - 1) * self.hidden * elem
