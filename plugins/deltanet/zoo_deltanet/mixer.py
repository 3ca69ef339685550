"""DeltaNet (Yang et al. 2024, arXiv 2406.06484) and Gated DeltaNet (Yang, Kautz &
Hatamizadeh, ICLR 2025, arXiv 2412.06464): linear attention whose state is edited by the
delta rule instead of only added to.

    q, k, v = SiLU(ShortConv(W_q x)), SiLU(ShortConv(W_k x)), SiLU(ShortConv(W_v x))
    q, k    = q / ||q||, k / ||k||                      per head (d_k), then q *= d_k^-1/2
    beta_t  = sigmoid(W_b x_t)                          one writing strength per head
    alpha_t = exp(-exp(A_log) softplus(W_a x_t + dt_bias))   Gated DeltaNet only (Mamba-2's decay)
    S_t     = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,   o_t = S_t q_t
    y       = W_o (RMSNorm(o) * SiLU(W_g x))            gated RMSNorm per head

Heads have separate key and value dims (d_v = expand_v * d_k). The state is
{"conv": (B, W-1, 2 H d_k + H d_v), "ssm": (B, H, d_k, d_v) float32}, H = S^T.

Three paths: naive (`reference.naive_delta_rule`, the equation per token), chunked
(`chunked.chunk_delta_rule`, the WY/UT form, on CPU; the Triton kernel in
`triton_chunk.py` on CUDA) and the O(1) `step` for decoding. Every path takes document
starts (`resets` / `reset`): the state before a start is zero, for the delta rule (inside
the chunk in the chunked and Triton forms) and for the short convolution.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.errors import UserError
from zoo_core.interfaces import Mixer
from zoo_deltanet import triton_chunk
from zoo_deltanet.chunked import chunk_delta_rule
from zoo_deltanet.reference import naive_delta_rule
from zoo_kernels.conv import causal_conv1d

BACKENDS = ("auto", "chunked", "triton", "naive")


@dataclass
class DeltaNetConfig:
    #: Number of heads H.
    n_heads: int = 4
    #: Key (and query) dim per head d_k; 0: round(0.75 dim / n_heads), flash-linear-attention's
    #: allocation (about 6 dim^2 parameters a layer with expand_v = 2, as Mamba-2 has).
    head_k_dim: int = 0
    #: Value dim per head d_v = expand_v * d_k.
    expand_v: float = 1.0
    #: Width of the short causal convolutions on q, k and v.
    conv: int = 4
    #: Chunk length C of the WY/UT form: C x C blocks inside a chunk, a loop over T / C chunks.
    chunk_size: int = 64
    #: Epsilon of the output gated RMSNorm.
    norm_eps: float = 1e-5
    #: auto (Triton on CUDA when importable, else chunked) | chunked | triton | naive
    backend: str = "auto"


@dataclass
class GatedDeltaNetConfig(DeltaNetConfig):
    #: Gated DeltaNet's value heads are twice the key heads.
    expand_v: float = 2.0
    #: The decay's dt = softplus(W_a x + dt_bias) starts log-uniform in [dt_min, dt_max] (Mamba-2).
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    #: A = exp(A_log) per head starts uniform in [A_init_min, A_init_max].
    A_init_min: float = 1.0
    A_init_max: float = 16.0


class DeltaNet(Mixer):
    """DeltaNet: the delta rule without decay (alpha_t = 1)."""

    gated = False
    supports_resets = True

    def __init__(self, dim: int, config: DeltaNetConfig) -> None:
        super().__init__(dim, config)
        c = config
        name = type(self).__name__
        if c.backend not in BACKENDS:
            raise UserError(
                f"{name} backend '{c.backend}' is not one of {', '.join(BACKENDS)}; set model.mixer.backend=auto"
            )
        if c.backend == "triton" and not triton_chunk.supported_chunk(c.chunk_size):
            raise UserError(
                f"{name} backend=triton needs chunk_size a power of two >= 16 (got {c.chunk_size}); "
                f"set model.mixer.chunk_size=64"
            )
        if c.n_heads < 1 or c.conv < 1 or c.chunk_size < 1 or c.head_k_dim < 0 or c.expand_v <= 0:
            raise UserError(
                f"{name}: need n_heads >= 1, conv >= 1, chunk_size >= 1, head_k_dim >= 0 "
                f"and expand_v > 0 (got {c.n_heads}, {c.conv}, {c.chunk_size}, {c.head_k_dim}, "
                f"{c.expand_v})"
            )
        self.n_heads = c.n_heads
        self.head_k_dim = c.head_k_dim or max(1, round(0.75 * dim / c.n_heads))
        dv = c.expand_v * self.head_k_dim
        if abs(dv - round(dv)) > 1e-6:
            raise UserError(
                f"{name}: expand_v * head_k_dim = {dv} is not a whole number; choose expand_v and head_k_dim so it is"
            )
        self.head_v_dim = int(round(dv))
        self.key_dim, self.value_dim = self.n_heads * self.head_k_dim, self.n_heads * self.head_v_dim
        self.conv_dim = 2 * self.key_dim + self.value_dim  # one depthwise conv over q, k and v
        self.qkv_proj = nn.Linear(dim, self.conv_dim, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(self.conv_dim, c.conv))
        self.b_proj = nn.Linear(dim, self.n_heads, bias=False)
        self.g_proj = nn.Linear(dim, self.value_dim, bias=False)  # output gate
        self.norm_weight = nn.Parameter(torch.empty(self.head_v_dim))
        self.out_proj = nn.Linear(self.value_dim, dim, bias=False)
        self._init_own()

    @torch.no_grad()
    def _init_own(self) -> None:
        bound = 1 / math.sqrt(self.config.conv)  # nn.Conv1d's default for a depthwise kernel
        nn.init.uniform_(self.conv_weight, -bound, bound)
        nn.init.ones_(self.norm_weight)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._init_own()

    # -- the pieces every path shares ------------------------------------------------------------
    def _log_decay(self, x: Tensor) -> Tensor | None:
        return None  # DeltaNet: alpha = 1

    def _qkvb(self, qkv: Tensor, x: Tensor):
        acc = torch.promote_types(x.dtype, torch.float32)
        q, k, v = qkv.to(acc).split([self.key_dim, self.key_dim, self.value_dim], -1)
        q = _l2norm(q.unflatten(-1, (self.n_heads, self.head_k_dim)))
        k = _l2norm(k.unflatten(-1, (self.n_heads, self.head_k_dim)))
        beta = torch.sigmoid(self.b_proj(x).to(acc))
        return q, k, v.unflatten(-1, (self.n_heads, self.head_v_dim)), beta

    def _out(self, o: Tensor, x: Tensor) -> Tensor:
        """Gated RMSNorm per head, normalised in float32, then the output projection."""
        z = self.g_proj(x).unflatten(-1, (self.n_heads, self.head_v_dim))
        w = self.norm_weight.to(o.dtype)
        o = F.rms_norm(o, (self.head_v_dim,), w, self.config.norm_eps) * F.silu(z.to(o.dtype))
        return self.out_proj(o.flatten(-2).to(x.dtype))

    def _backend(self, x: Tensor) -> str:
        b, chunk = self.config.backend, self.config.chunk_size
        if b == "auto":
            if x.is_cuda and triton_chunk.usable():
                if triton_chunk.supported_chunk(chunk):
                    return "triton"
                triton_chunk.warn_once(
                    f"zoo-deltanet: chunk_size={chunk} is not a power of two >= 16, so CUDA "
                    f"tensors take the chunked PyTorch path (set model.mixer.chunk_size=64)"
                )
            return "chunked"
        if b == "triton" and not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            raise UserError(
                f"{type(self).__name__} backend=triton needs CUDA tensors (or TRITON_INTERPRET=1); "
                f"set model.mixer.backend=auto"
            )
        return b

    # -- the three paths ----------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        state: dict[str, Tensor] | None = None,
        return_state: bool = False,
        resets: Tensor | None = None,
    ):
        """resets: (B, T) bool, True where a document starts (its state before is zero)."""
        conv_state = None if state is None else state["conv"]
        h0 = None if state is None else state["ssm"]
        qkv, new_conv = causal_conv1d(
            self.qkv_proj(x), self.conv_weight.to(x.dtype), None, conv_state, activation="silu", resets=resets
        )
        q, k, v, beta = self._qkvb(qkv, x)
        log_a = self._log_decay(x)
        backend = self._backend(x)
        if backend == "naive":
            alpha = None if log_a is None else log_a.exp()
            o, h = naive_delta_rule(q, k, v, beta, alpha, h0, resets=resets)
        else:
            kernel = "triton" if backend == "triton" else "torch"
            o, h = chunk_delta_rule(q, k, v, beta, log_a, self.config.chunk_size, h0, resets=resets, kernel=kernel)
        y = self._out(o, x)
        return y, ({"conv": new_conv, "ssm": h} if return_state else None)

    def step(self, x: Tensor, state: dict[str, Tensor], reset: Tensor | None = None):
        """One token: H <- a H;  H <- H + k (beta (v - H^T k))^T;  o = H^T q. reset: (B,) bool,
        rows whose document starts at this token (their state before it is zero)."""
        if reset is not None:
            state = {n: torch.where(reset.view(-1, *[1] * (s.dim() - 1)), 0.0, s) for n, s in state.items()}
        window = torch.cat([state["conv"].to(x.dtype), self.qkv_proj(x)[:, None]], 1)  # (B, W, C)
        qkv = F.silu(torch.einsum("bwc,cw->bc", window, self.conv_weight.to(x.dtype)))
        q, k, v, beta = self._qkvb(qkv, x)
        q = q * self.head_k_dim**-0.5
        h = state["ssm"].to(q.dtype)
        log_a = self._log_decay(x)
        if log_a is not None:
            h = h * log_a.exp()[..., None, None]
        delta = beta[..., None] * (v - torch.einsum("bhkv,bhk->bhv", h, k))
        h = h + k[..., :, None] * delta[..., None, :]
        o = torch.einsum("bhkv,bhk->bhv", h, q)
        return self._out(o, x), {"conv": window[:, 1:], "ssm": h}

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> dict[str, Tensor]:
        w = self.qkv_proj.weight
        device, dtype = device or w.device, dtype or w.dtype
        return {
            "conv": torch.zeros(batch_size, self.config.conv - 1, self.conv_dim, device=device, dtype=dtype),
            "ssm": torch.zeros(
                batch_size,
                self.n_heads,
                self.head_k_dim,
                self.head_v_dim,
                device=device,
                dtype=torch.promote_types(dtype, torch.float32),
            ),
        }

    # -- accounting ---------------------------------------------------------------------------
    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token (multiply-add = 2) of the chunked form, dense C x C blocks."""
        H, Dk, Dv, C = self.n_heads, self.head_k_dim, self.head_v_dim, self.config.chunk_size
        proj = 2 * self.dim * (self.conv_dim + self.value_dim + 2 * H) + 2 * self.value_dim * self.dim
        conv = 2 * self.config.conv * self.conv_dim
        # per chunk and head: K K^T, Q K^T (2 C^2 Dk each), the triangular solve (~C^3 / 3 madds),
        # W and U (2 C^2 (Dk + Dv)), P U' (2 C^2 Dv); W H, Q H, K^T U' (2 C Dk Dv each)
        per_chunk = 2 * C * C * (3 * Dk + 2 * Dv) + 2 * C**3 / 3 + 6 * C * Dk * Dv
        core = H * per_chunk / C
        elementwise = 10 * (self.conv_dim + self.value_dim)  # SiLU, l2 norms, gated norm
        return float(proj + conv + core + elementwise)

    def state_size(self, seq_len: int) -> int:
        conv = (self.config.conv - 1) * self.conv_dim * self.qkv_proj.weight.element_size()
        return int(conv + self.n_heads * self.head_k_dim * self.head_v_dim * 4)


class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet: the delta rule with Mamba-2's per-head decay alpha_t."""

    gated = True

    def __init__(self, dim: int, config: GatedDeltaNetConfig) -> None:
        c = config
        if not 0 < c.dt_min <= c.dt_max or c.dt_init_floor <= 0 or not 0 < c.A_init_min <= c.A_init_max:
            raise UserError(
                "GatedDeltaNet: need 0 < dt_min <= dt_max, dt_init_floor > 0 and 0 < A_init_min <= A_init_max"
            )
        super().__init__(dim, config)
        self.a_proj = nn.Linear(dim, self.n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads))
        self._init_own()

    @torch.no_grad()
    def _init_own(self) -> None:
        super()._init_own()
        if not hasattr(self, "A_log"):  # called from DeltaNet.__init__ before they exist
            return
        c = self.config
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(c.A_init_min, c.A_init_max).log())
        u = torch.rand(self.dt_bias.shape, device=self.dt_bias.device, dtype=torch.float32)
        dt = torch.exp(u * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min)).clamp(min=c.dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def _log_decay(self, x: Tensor) -> Tensor:
        """log alpha_t = -exp(A_log) softplus(W_a x_t + dt_bias), (B, T, H), in float32 or wider."""
        acc = torch.promote_types(x.dtype, torch.float32)
        return -self.A_log.to(acc).exp() * _softplus(self.a_proj(x).to(acc) + self.dt_bias.to(acc))

    def flops_per_token(self, seq_len: int) -> float:
        C = self.config.chunk_size
        decay = 2 * self.dim * self.n_heads + self.n_heads * (3 * C + 10)  # a_proj; Gamma (C x C a chunk)
        return super().flops_per_token(seq_len) + float(decay)


def _softplus(z: Tensor) -> Tensor:
    """F.softplus (threshold 20) in elementwise ops: under torch.compile, aten's softplus_backward
    is traced as contiguous but returns the (transposed) layout of its gradient here, and the
    a_proj backward's view of it fails (torch 2.13, aot_eager)."""
    return torch.where(z > 20, z, torch.log1p(torch.exp(z.clamp(max=20))))


def _l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)
