"""Mamba (Gu & Dao 2023, arXiv 2312.00752): the selective scan over a diagonal state.

    x, z = in_proj(input)                               two branches of width d_inner
    u    = SiLU(Conv_W(x))                              causal depthwise conv, width d_conv
    dt_r, B_t, C_t = x_proj(u_t)                        dt of rank R, B and C of size N
    dt_t = softplus(dt_proj(dt_r))                      (its bias is the dt bias)
    A    = -exp(A_log),  S4D-real init A[d, n] = -(n + 1)
    h_t  = exp(dt_t A) h_{t-1} + dt_t B_t u_t           h: (d_inner, d_state), eq. 2a with ZOH A, Euler B
    y_t  = C_t h_t + D u_t                              eq. 2b plus the skip
    out  = out_proj(y * SiLU(z))

Three paths, picked once per forward by `paths.pick`: naive (`reference.selective_scan_ref`,
one step per token), fast (zoo-kernels' fused `selective_scan`, compiled C on CPU and Triton
on CUDA, which never stores the (b, T, D, N) decays, else a linear scan over the flattened
state; mamba-ssm's `selective_scan_fn` and causal-conv1d on CUDA when installed and no state
is carried) and the recurrent `step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.errors import UserError
from zoo_mamba import paths
from zoo_mamba.base import MambaMixer
from zoo_mamba.common import acc_dtype, init_dt_bias, reset_state


@dataclass
class MambaConfig:
    #: State size N per channel.
    d_state: int = 16
    #: Width of the causal depthwise conv.
    d_conv: int = 4
    #: Inner width = expand * dim.
    expand: int = 2
    #: Rank of the dt projection; None = ceil(dim / 16).
    dt_rank: int | None = None
    #: dt at init is log-uniform in [dt_min, dt_max], clamped below by dt_init_floor.
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    #: dt_proj weight ~ U(+-dt_scale / sqrt(dt_rank)).
    dt_scale: float = 1.0
    conv_bias: bool = True
    #: Biases on in_proj / out_proj.
    bias: bool = False
    #: auto (mamba-ssm / zoo-kernels Triton on CUDA, else chunked) | chunked | naive
    backend: str = "auto"


class Mamba(MambaMixer):
    def __init__(self, dim: int, config: MambaConfig) -> None:
        super().__init__("mamba", dim, config)
        c = config
        if c.d_state < 1 or c.d_conv < 1 or c.expand < 1:
            raise UserError("mamba: d_state, d_conv and expand must be >= 1")
        self.d_inner, self.d_state = c.expand * dim, c.d_state
        self.dt_rank = c.dt_rank or math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=c.bias)
        self.conv_weight = nn.Parameter(torch.empty(self.d_inner, c.d_conv))
        self.conv_bias = nn.Parameter(torch.empty(self.d_inner)) if c.conv_bias else None
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * c.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # Stored flat: the core decays every >=2-D tensor, and A_log must not decay.
        self.A_log = nn.Parameter(torch.empty(self.d_inner * c.d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, dim, bias=c.bias)
        self._init_own()

    # -- initialisation (Mamba's defaults) ---------------------------------------------
    @torch.no_grad()
    def _init_own(self) -> None:
        c = self.config
        bound = 1 / math.sqrt(c.d_conv)
        nn.init.uniform_(self.conv_weight, -bound, bound)
        if self.conv_bias is not None:
            nn.init.uniform_(self.conv_bias, -bound, bound)
        std = self.dt_rank**-0.5 * c.dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        init_dt_bias(self.dt_proj.bias, c.dt_min, c.dt_max, c.dt_init_floor)
        # S4D-real: A[d, n] = -(n + 1)
        n = torch.arange(1, c.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(n.log().repeat(self.d_inner))
        nn.init.ones_(self.D)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._init_own()

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.A_log.to(acc_dtype(self.A_log)).view(self.d_inner, self.d_state))  # float64 stays

    def _ssm_inputs(self, x: Tensor):
        """dt (softplus'ed, in the scan's dtype), B and C from the conv output x (..., d_inner)."""
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt).to(acc_dtype(x)))
        return dt, B, C

    # -- forward: naive / fast, one pick ------------------------------------------------
    def forward(
        self,
        x: Tensor,
        state: dict[str, Tensor] | None = None,
        return_state: bool = False,
        resets: Tensor | None = None,
    ):
        path, conv_state, h0 = self._begin(x, state, return_state, resets)
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        u, conv_state = paths.conv(path.conv, xs, self.conv_weight, self.conv_bias, conv_state, return_state, resets)
        dt, B, C = self._ssm_inputs(u)
        y, h = paths.selective_scan(path.scan, u, dt, self.A.to(acc_dtype(u)), B, C, h0, resets)
        y = (y + u * self.D.to(u.dtype)) * F.silu(z)
        return self.out_proj(y), ({"conv": conv_state, "ssm": h} if return_state else None)

    # -- recurrent step -----------------------------------------------------------------
    def step(self, x: Tensor, state: dict[str, Tensor], reset: Tensor | None = None):
        path = paths.pick_step(self.config.backend, x)
        state = reset_state(state, reset)
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        u, conv_state = paths.conv_step(path.conv, xs, self.conv_weight, self.conv_bias, state["conv"])
        dt, B, C = self._ssm_inputs(u)
        y, h = paths.ssm_step(path.scan, state["ssm"], u, dt, self.A, B, C)
        y = (y + u * self.D.to(u.dtype)) * F.silu(z)
        return self.out_proj(y), {"conv": conv_state, "ssm": h}

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> dict[str, Tensor]:
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        return {
            "conv": torch.zeros(batch_size, self.config.d_conv - 1, self.d_inner, device=device, dtype=dtype),
            "ssm": torch.zeros(
                batch_size, self.d_inner, self.d_state, device=device, dtype=torch.promote_types(dtype, torch.float32)
            ),
        }

    # -- accounting ------------------------------------------------------------------------
    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token (multiply-add = 2); the scan does not depend on seq_len."""
        Di, N, R = self.d_inner, self.d_state, self.dt_rank
        projections = 2 * self.dim * 2 * Di + 2 * Di * (R + 2 * N) + 2 * R * Di + 2 * Di * self.dim
        conv = 2 * self.config.d_conv * Di
        # per (d, n): dt*A, exp, dt*B, *x, a*h + u (2), C*h + sum (2)
        scan = 8 * Di * N
        elementwise = 8 * Di  # softplus, D skip, SiLU gate
        return float(projections + conv + scan + elementwise)

    def state_size(self, seq_len: int) -> int:
        conv = (self.config.d_conv - 1) * self.d_inner * self.in_proj.weight.element_size()
        return int(conv + self.d_inner * self.d_state * 4)  # the SSM state is float32
