"""Mamba-2 (Dao & Gu 2024, arXiv 2405.21060): state-space duality (SSD), a scalar decay per head.

    z, xBC, dt = in_proj(input)                         heads of headdim P; B, C in ngroups groups
    x, B, C    = SiLU(Conv_W(xBC))                      causal depthwise conv over (x, B, C)
    dt_t = softplus(dt_t + dt_bias);  A = -exp(A_log)   one scalar per head
    h_t  = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T         h: (P, N) per head (section 7)
    y_t  = h_t C_t + D x_t
    out  = out_proj(RMSNorm(y * SiLU(z)))               normalised per group of heads

Three paths, picked once per forward by `paths.pick`: naive (`reference.ssd_ref`, one step per
token), chunked SSD (zoo-kernels' `ssd_chunked` in PyTorch on CPU; on CUDA mamba-ssm's kernel
and causal-conv1d when installed, else zoo-kernels' Triton SSD) and the recurrent `step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.cpu_linear import linear
from zoo_core.errors import UserError
from zoo_mamba import paths
from zoo_mamba.base import MambaMixer
from zoo_mamba.common import GatedRMSNorm, acc_dtype, init_dt_bias, reset_state


@dataclass
class Mamba2Config:
    #: State size N per head.
    d_state: int = 64
    #: Width of the causal depthwise conv.
    d_conv: int = 4
    #: Inner width = expand * dim.
    expand: int = 2
    #: Channels per head P; heads = expand * dim / headdim.
    headdim: int = 64
    #: Groups sharing B and C (like grouped-query attention); must divide the heads.
    ngroups: int = 1
    #: SSD chunk length L: the within-chunk quadratic term costs O(L) per token.
    chunk_size: int = 64
    #: dt at init is log-uniform in [dt_min, dt_max], clamped below by dt_init_floor.
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    #: A = -exp(A_log) per head, A_log = log(uniform(A_init_min, A_init_max)).
    A_init_min: float = 1.0
    A_init_max: float = 16.0
    conv_bias: bool = True
    norm_eps: float = 1e-5
    #: auto (on CUDA: mamba-ssm if installed, else zoo-kernels' Triton SSD; chunked on CPU) | chunked | naive
    backend: str = "auto"


class Mamba2(MambaMixer):
    ssd = True

    def __init__(self, dim: int, config: Mamba2Config) -> None:
        super().__init__("mamba2", dim, config)
        c = config
        self.d_inner = c.expand * dim
        if self.d_inner % c.headdim:
            raise UserError(
                f"mamba2: expand * dim = {self.d_inner} is not a multiple of headdim={c.headdim}; "
                f"set model.mixer.headdim to a divisor of it"
            )
        self.n_heads = self.d_inner // c.headdim
        if self.n_heads % c.ngroups:
            raise UserError(f"mamba2: ngroups={c.ngroups} must divide the {self.n_heads} heads")
        if c.chunk_size < 1 or not 0 < c.A_init_min <= c.A_init_max:
            raise UserError("mamba2: need chunk_size >= 1 and 0 < A_init_min <= A_init_max")
        self.headdim, self.d_state, self.ngroups = c.headdim, c.d_state, c.ngroups
        self.conv_dim = self.d_inner + 2 * c.ngroups * c.d_state  # conv runs over x, B, C
        self.in_proj = nn.Linear(dim, self.d_inner + self.conv_dim + self.n_heads, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(self.conv_dim, c.d_conv))
        self.conv_bias = nn.Parameter(torch.empty(self.conv_dim)) if c.conv_bias else None
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads))
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.D = nn.Parameter(torch.empty(self.n_heads))
        self.norm = GatedRMSNorm(self.d_inner, c.norm_eps, group_size=self.d_inner // c.ngroups)  # per group
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)
        self._init_own()

    # -- initialisation (Mamba-2's defaults) ----------------------------------------
    @torch.no_grad()
    def _init_own(self) -> None:
        c = self.config
        bound = 1 / math.sqrt(c.d_conv)  # nn.Conv1d's default for a depthwise kernel
        nn.init.uniform_(self.conv_weight, -bound, bound)
        if self.conv_bias is not None:
            nn.init.uniform_(self.conv_bias, -bound, bound)
        init_dt_bias(self.dt_bias, c.dt_min, c.dt_max, c.dt_init_floor)
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(c.A_init_min, c.A_init_max).log())
        nn.init.ones_(self.D)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._init_own()

    def _split(self, x: Tensor):
        """z, xBC, dt: one product per part, from row blocks of in_proj's weight. Splitting one big
        output would make backward gather the parts' gradients with a (B, T, 2.3 dim) cat."""
        parts = self.in_proj.weight.split([self.d_inner, self.conv_dim, self.n_heads])
        return tuple(linear(x, w) for w in parts)

    def _ssm_inputs(self, xbc: Tensor, dt: Tensor):
        """x as heads, dt (softplus'ed), A, and B, C as groups, from the conv output xBC."""
        G, N = self.ngroups, self.d_state
        xs, B, C = torch.split(xbc, [self.d_inner, G * N, G * N], dim=-1)
        xs = xs.unflatten(-1, (self.n_heads, self.headdim))
        B, C = B.unflatten(-1, (G, N)), C.unflatten(-1, (G, N))
        dt = F.softplus(dt.to(acc_dtype(dt)) + self.dt_bias)
        A = -torch.exp(self.A_log.to(acc_dtype(dt)))
        return xs, dt, A, B, C

    def _output(self, y: Tensor, xs: Tensor, z: Tensor) -> Tensor:
        y = y + xs * self.D.to(xs.dtype)[:, None]
        return self.out_proj(self.norm(y.flatten(-2), z))

    # -- forward: naive / chunked / CUDA, one pick ----------------------------------------
    def forward(
        self,
        x: Tensor,
        state: dict[str, Tensor] | None = None,
        return_state: bool = False,
        resets: Tensor | None = None,
    ):
        path, conv_state, h0 = self._begin(x, state, return_state, resets)
        z, xbc, dt = self._split(x)
        xbc, conv_state = paths.conv(path.conv, xbc, self.conv_weight, self.conv_bias, conv_state, return_state, resets)
        xs, dt, A, B, C = self._ssm_inputs(xbc, dt)
        y, h = paths.ssd(path.scan, xs, dt, A, B, C, self.config.chunk_size, h0, resets)
        return self._output(y, xs, z), ({"conv": conv_state, "ssm": h} if return_state else None)

    # -- recurrent step -------------------------------------------------------------------
    def step(self, x: Tensor, state: dict[str, Tensor], reset: Tensor | None = None):
        path = paths.pick_step(self.config.backend, x)
        state = reset_state(state, reset)
        z, xbc, dt = self._split(x)
        xbc, conv_state = paths.conv_step(path.conv, xbc, self.conv_weight, self.conv_bias, state["conv"])
        xs, dt, A, B, C = self._ssm_inputs(xbc, dt)
        y, h = paths.ssm_step(path.scan, state["ssm"], xs, dt, A, B, C)
        return self._output(y, xs, z), {"conv": conv_state, "ssm": h}

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> dict[str, Tensor]:
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        return {
            "conv": torch.zeros(batch_size, self.config.d_conv - 1, self.conv_dim, device=device, dtype=dtype),
            "ssm": torch.zeros(
                batch_size,
                self.n_heads,
                self.headdim,
                self.d_state,
                device=device,
                dtype=torch.promote_types(dtype, torch.float32),
            ),
        }

    # -- accounting ------------------------------------------------------------------------
    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token (multiply-add = 2) of the chunked SSD algorithm."""
        H, P, N, G = self.n_heads, self.headdim, self.d_state, self.ngroups
        L = min(self.config.chunk_size, seq_len)
        ctx = (L + 1) / 2  # mean positions a token attends to inside its chunk
        projections = 2 * self.dim * (self.in_proj.out_features + self.d_inner)
        conv = 2 * self.config.d_conv * self.conv_dim
        within = 2 * G * N * ctx + 2 * H * P * ctx  # C.B scores (per group) and scores @ (x dt)
        states = 2 * H * P * N * 2  # the chunk state in, the entering state out
        passing = 2 * H * P * N / L  # one state update per chunk
        elementwise = 10 * self.d_inner  # D skip, gate, norm
        return float(projections + conv + within + states + passing + elementwise)

    def state_size(self, seq_len: int) -> int:
        conv = (self.config.d_conv - 1) * self.conv_dim * self.in_proj.weight.element_size()
        ssm = self.n_heads * self.headdim * self.d_state * 4  # float32
        return int(conv + ssm)
