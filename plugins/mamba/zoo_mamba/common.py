"""Pieces both mixers share: option checks, the dt initialisation, the causal depthwise conv
(parallel and one-step, with its carried state), the one-token SSM recurrence and Mamba-2's
gated RMSNorm."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.errors import UserError
from zoo_kernels.conv import causal_conv1d

BACKENDS = ("auto", "chunked", "naive")


def check_backend(mixer: str, backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(
            f"{mixer} backend '{backend}' is not one of {', '.join(BACKENDS)}; set model.mixer.backend=auto"
        )


def acc_dtype(t: Tensor) -> torch.dtype:
    """The scan accumulates in float32 (float64 when the inputs are float64)."""
    return torch.promote_types(t.dtype, torch.float32)


@torch.no_grad()
def init_dt_bias(bias: Tensor, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
    """dt drawn log-uniformly in [dt_min, dt_max]; the bias is its inverse softplus,
    so softplus(bias) == dt at initialisation (Mamba, section 3.6)."""
    u = torch.rand(bias.shape, device=bias.device, dtype=torch.float32)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
    bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt) = dt + log(1 - exp(-dt))


def check_dt_range(mixer: str, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
    if not 0 < dt_min <= dt_max:
        raise UserError(f"{mixer}: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if dt_init_floor <= 0:
        raise UserError(f"{mixer}: dt_init_floor must be positive, got {dt_init_floor}")


# -- causal depthwise conv1d -----------------------------------------------------


def causal_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None, conv_state: Tensor | None, resets: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv over time, then SiLU.

    x (B, T, C); weight (C, W); conv_state (B, W-1, C): the W-1 inputs before x
    (zeros at the start of a stream); resets (B, T) bool: document starts, whose taps see
    nothing before them. Returns (y (B, T, C), new conv_state).
    zoo-kernels' fused conv + SiLU on CPU (one pass instead of ~10 full-size ops
    and their backwards); F.conv1d on CUDA."""
    if resets is None:
        return causal_conv1d(x, weight, bias, conv_state, activation="silu")
    return causal_conv1d(x, weight, bias, conv_state, activation="silu", resets=resets)


def reset_state(state: dict[str, Tensor], reset: Tensor | None) -> dict[str, Tensor]:
    """The state of a step whose rows `reset` (B,) start a document: those rows become the
    initial state (zeros), the others are kept."""
    if reset is None:
        return state
    keep = ~reset.to(torch.bool)
    return {k: v * keep.view(-1, *(1,) * (v.dim() - 1)) for k, v in state.items()}


def causal_conv_step(x: Tensor, weight: Tensor, bias: Tensor | None, conv_state: Tensor) -> tuple[Tensor, Tensor]:
    """One token: x (B, C) -> (y (B, C), new conv_state (B, W-1, C))."""
    window = torch.cat([conv_state.to(x.dtype), x[:, None]], dim=1)  # (B, W, C)
    y = torch.einsum("bwc,cw->bc", window, weight)
    if bias is not None:
        y = y + bias
    return F.silu(y), window[:, 1:]


# -- one token of the SSM recurrence ---------------------------------------------------


def ssm_step_torch(h: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """h_t = exp(dt A) h_{t-1} + dt x B^T, y = h_t C for one token, dt already softplus'ed; (y, new h).

    Mamba-2: h (b, H, P, N), x (b, H, P), dt (b, H), A (H,), B, C (b, G, N).
    Mamba-1: h (b, D, N), x (b, D), dt (b, D), A (D, N), B, C (b, N)."""
    acc = h.dtype
    if h.dim() == 4:
        rep = h.shape[1] // B.shape[1]
        Bh, Ch = B.repeat_interleave(rep, 1).to(acc), C.repeat_interleave(rep, 1).to(acc)
        dt_ = dt.to(acc)[:, :, None, None]
        new = torch.exp(dt_ * A.to(acc)[:, None, None]) * h + dt_ * x.to(acc)[..., None] * Bh[:, :, None, :]
        return torch.einsum("bhpn,bhn->bhp", new, Ch).to(x.dtype), new
    dt_ = dt.to(acc)[..., None]
    new = torch.exp(dt_ * A.to(acc)) * h + dt_ * B.to(acc)[:, None, :] * x.to(acc)[..., None]
    return torch.einsum("bdn,bn->bd", new, C.to(acc)).to(x.dtype), new


# -- Mamba-2's output norm --------------------------------------------------------------


class GatedRMSNorm(nn.Module):
    """Mamba-2's output norm: RMSNorm(y * SiLU(z)) * weight, normalised in float32 (float64 for float64) over
    each group of `group_size` channels (mamba-ssm's RMSNormGated with
    group_size = d_inner // ngroups: one norm per group of heads sharing B and C)."""

    def __init__(self, dim: int, eps: float = 1e-5, group_size: int | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.group_size = group_size or dim
        if dim % self.group_size:
            raise UserError(f"gated norm: group size {self.group_size} does not divide the width {dim}")
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        acc = acc_dtype(y)  # float32, or float64 for float64 inputs
        g = y.to(acc) * F.silu(z.to(acc))
        gs = self.group_size
        if gs == g.shape[-1] and g.dtype == self.weight.dtype:  # one fused op: the same values in fewer passes
            return F.rms_norm(g, (gs,), self.weight, self.eps).to(y.dtype)
        g = g.unflatten(-1, (-1, gs))
        g = (g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        return g.to(y.dtype) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
