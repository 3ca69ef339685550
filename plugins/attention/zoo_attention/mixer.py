"""Causal multi-head attention: GQA, RoPE or learned absolute positions, optional sliding window, KV-cache step.

Three paths, as every zoo mixer has:
* naive (`reference.naive_attention`): the softmax equation, materialised;
* fast: flash-attn on CUDA when installed, else PyTorch SDPA;
* step: one token against the KV cache.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_attention.reference import allowed, naive_attention, rope
from zoo_attention import flash
from zoo_core.interfaces import Mixer


@dataclass
class AttentionConfig:
    #: Query heads; default dim // head_dim.
    n_heads: Optional[int] = None
    head_dim: int = 64
    #: Key/value heads for grouped-query attention; default n_heads.
    n_kv_heads: Optional[int] = None
    #: Sliding window (local attention): each query sees this many positions, itself included.
    window: Optional[int] = None
    rope_theta: float = 10000.0
    #: The fraction of each head's dims RoPE rotates (the first ones; RecurrentGemma: 0.5); the rest pass.
    rope_fraction: float = 1.0
    #: A bias on the output projection (RecurrentGemma's o_proj has one).
    out_bias: bool = False
    #: rope (rotary q/k) | learned (absolute position embeddings added to the mixer's input, as in
    #: Zoology's attention) | none (no position signal: causal masking alone).
    position: str = "rope"
    #: learned: positions 0 .. max_positions - 1 have an embedding.
    max_positions: int = 2048
    #: Kernel of a short causal depthwise convolution over the input before q, k, v (0: none).
    #: Zoology's attention baselines run one first (Hybrid[BaseConv, MHA]); it hands each
    #: position its predecessors, which recall tasks need.
    conv: int = 0
    #: auto (flash-attn on CUDA if installed, else SDPA) | sdpa | naive
    backend: str = "auto"


class Attention(Mixer):
    def __init__(self, dim: int, config: AttentionConfig) -> None:
        super().__init__(dim, config)
        self.head_dim = config.head_dim
        self.n_heads = config.n_heads or max(1, dim // config.head_dim)
        self.n_kv_heads = config.n_kv_heads or self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if config.backend not in ("auto", "sdpa", "naive"):
            raise ValueError(f"attention backend '{config.backend}' is not one of auto, sdpa, naive")
        if config.position not in ("rope", "learned", "none"):
            raise ValueError(f"attention position '{config.position}' is not one of rope, learned, none")
        self.window = config.window
        self.rope_dim = int(self.head_dim * config.rope_fraction)
        if not 0 < config.rope_fraction <= 1 or self.rope_dim % 2:
            raise ValueError(f"attention rope_fraction={config.rope_fraction} must be in (0, 1] and give an even "
                             f"number of dims of head_dim={self.head_dim}")
        self.pos_embed = nn.Parameter(torch.empty(config.max_positions, dim)) if config.position == "learned" else None
        if config.conv < 0 or config.conv == 1:
            raise ValueError(f"attention conv={config.conv}: give a kernel of 2 or more, or 0 for none")
        self.conv = nn.Conv1d(dim, dim, config.conv, groups=dim) if config.conv else None
        self.wq = nn.Linear(dim, self.n_heads * self.head_dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, dim, bias=config.out_bias)

    # -- projections ------------------------------------------------------------
    def _qkv(self, x: Tensor, positions: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """q, k, v as (B, heads, T, head_dim), with RoPE on q and k."""
        B, T, _ = x.shape
        if self.pos_embed is not None:
            if int(positions.max()) >= self.pos_embed.shape[0]:
                raise ValueError(f"attention position {int(positions.max())} is past max_positions="
                                 f"{self.pos_embed.shape[0]}; raise model.mixer.max_positions")
            x = x + self.pos_embed[positions].to(x.dtype)
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k, v = self.wkv(x).view(B, T, 2, self.n_kv_heads, self.head_dim).unbind(2)
        theta, rot = self.config.rope_theta, self.rope_dim
        if self.config.position != "rope":
            return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.config.backend == "naive":
            q, k = (_first_dims(lambda u: rope(u, positions, theta), t.transpose(1, 2), rot) for t in (q, k))
        else:
            cis = rope_cis(positions, rot, theta, x.dtype)
            q, k = (_first_dims(lambda u: rotate(u, cis), t, rot).transpose(1, 2) for t in (q, k))
        return q, k, v.transpose(1, 2)

    def _out(self, o: Tensor) -> Tensor:
        B, H, T, hd = o.shape
        return self.wo(o.transpose(1, 2).reshape(B, T, H * hd))

    # -- the three paths -------------------------------------------------------------
    def _short_conv(self, x: Tensor, state: Optional[Dict[str, Tensor]]) -> Tuple[Tensor, Optional[Tensor]]:
        """y_t = b + sum_j w_j * x_{t-k+1+j} per channel, with the last k-1 inputs of the
        previous segment (zeros at the start); returns y and the new last k-1 inputs."""
        if self.conv is None:
            return x, None
        k = self.conv.kernel_size[0]
        prev = state["conv"] if state is not None else x.new_zeros(x.shape[0], k - 1, x.shape[2])
        xx = torch.cat([prev.to(x.dtype), x], dim=1)
        y = F.conv1d(xx.transpose(1, 2), self.conv.weight, self.conv.bias, groups=self.dim).transpose(1, 2)
        return y, xx[:, xx.shape[1] - (k - 1):]

    def forward(self, x: Tensor, state: Optional[Dict[str, Tensor]] = None, return_state: bool = False):
        B, T, _ = x.shape
        x, conv_state = self._short_conv(x, state)
        start = state["next"] if state is not None else torch.zeros(B, dtype=torch.long, device=x.device)
        q_pos = start[:, None] + torch.arange(T, device=x.device)
        q, k, v = self._qkv(x, q_pos)
        k_pos = q_pos
        if state is not None and state["k"].shape[2] > 0:
            k = torch.cat([state["k"], k], dim=2)
            v = torch.cat([state["v"], v], dim=2)
            k_pos = torch.cat([state["pos"], q_pos], dim=1)
        o = self._attend(q, k, v, q_pos, k_pos, plain_causal=state is None or state["k"].shape[2] == 0)
        new_state = self._trim(k, v, k_pos, q_pos[:, -1] + 1, conv_state) if return_state else None
        return self._out(o), new_state

    def _attend(self, q, k, v, q_pos, k_pos, plain_causal: bool) -> Tensor:
        backend = self.config.backend
        if backend == "naive":
            return naive_attention(q, k, v, q_pos, k_pos, self.window)
        if backend == "auto" and plain_causal and flash.usable(q):
            return flash.attention(q, k, v, self.window)
        gqa = self.n_heads > self.n_kv_heads  # SDPA reads the shared kv heads in place, no copies
        # A window that spans the whole segment is plain causal attention: take SDPA's
        # fused causal kernel rather than materialising a (T, T) mask.
        if plain_causal and (not self.window or self.window >= k.shape[2]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        mask = allowed(q_pos, k_pos, self.window)[:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

    def step(self, x: Tensor, state: Dict[str, Tensor]):
        pos = state["next"][:, None]
        xc, conv_state = self._short_conv(x[:, None], state)
        q, k, v = self._qkv(xc, pos)
        k = torch.cat([state["k"], k], dim=2)
        v = torch.cat([state["v"], v], dim=2)
        k_pos = torch.cat([state["pos"], pos], dim=1)
        groups = self.n_heads // self.n_kv_heads
        kr, vr = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        scores = (q @ kr.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, 1, S)
        scores = scores.masked_fill(~allowed(pos, k_pos, self.window)[:, None], float("-inf"))
        o = scores.softmax(-1) @ vr
        return self._out(o)[:, 0], self._trim(k, v, k_pos, pos[:, 0] + 1, conv_state)

    def _trim(self, k: Tensor, v: Tensor, k_pos: Tensor, next_pos: Tensor,
              conv_state: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """With a window, later queries never see keys older than window - 1 steps."""
        if self.window and k.shape[2] > self.window - 1:
            keep = max(self.window - 1, 0)
            k, v, k_pos = k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:], k_pos[:, k_pos.shape[1] - keep:]
        state = {"k": k, "v": v, "pos": k_pos, "next": next_pos}
        if conv_state is not None:
            state["conv"] = conv_state
        return state

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> Dict[str, Tensor]:
        dtype = dtype or self.wq.weight.dtype
        device = device or self.wq.weight.device
        empty = torch.zeros(batch_size, self.n_kv_heads, 0, self.head_dim, device=device, dtype=dtype)
        state = {"k": empty, "v": empty.clone(), "pos": torch.zeros(batch_size, 0, dtype=torch.long, device=device),
                 "next": torch.zeros(batch_size, dtype=torch.long, device=device)}
        if self.conv is not None:
            state["conv"] = torch.zeros(batch_size, self.conv.kernel_size[0] - 1, self.dim, device=device, dtype=dtype)
        return state

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=0.02)

    # -- accounting ----------------------------------------------------------------------
    def context(self, seq_len: int) -> float:
        """Mean number of keys a query attends to over a sequence of seq_len."""
        if self.window and self.window < seq_len:
            w = self.window
            return (w * (w + 1) / 2 + (seq_len - w) * w) / seq_len
        return (seq_len + 1) / 2

    def flops_per_token(self, seq_len: int) -> float:
        q, kv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        projections = 2 * self.dim * (q + 2 * kv + q)
        scores_and_values = 4 * q * self.context(seq_len)
        conv = 2 * self.dim * self.conv.kernel_size[0] if self.conv is not None else 0
        return float(projections + scores_and_values + conv)

    def state_size(self, seq_len: int) -> int:
        kept = min(seq_len, self.window - 1) if self.window else seq_len
        conv = (self.conv.kernel_size[0] - 1) * self.dim if self.conv is not None else 0
        return (2 * self.n_kv_heads * self.head_dim * kept + conv) * self.wq.weight.element_size()


def _first_dims(fn, t: Tensor, n: int) -> Tensor:
    """fn on the first n dims of t's last axis, the rest passed through (partial RoPE)."""
    return fn(t) if n == t.shape[-1] else torch.cat([fn(t[..., :n]), t[..., n:]], dim=-1)


# -- RoPE as one complex multiplication -------------------------------------------------
# The same rotation as reference.rope (pairs (x[2i], x[2i+1])), but as one pass over
# q and k with angles computed once per forward: 5x less time than the stacked
# real form in an eager CPU training step (B 8, T 256, 4 x 64 heads). Under
# torch.compile the real form stays: inductor fuses it, and has no complex codegen.

@torch.library.custom_op("zoo_attention::cos_sin", mutates_args=())
def cos_sin(angles: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin as an opaque op: left to itself, inductor inlines them into every
    consumer, and takes them per element of q and k (and again in the backward) rather
    than once per (position, frequency): 32x the trig, 40% of a compiled CPU step at
    batch 8 x 4 heads. Positions carry no gradient, so neither does this."""
    return angles.cos(), angles.sin()


@cos_sin.register_fake
def _(angles):
    return torch.empty_like(angles), torch.empty_like(angles)


def rope_cis(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """exp(i * pos * theta^(-2j/hd)) as (B, T, 1, hd/2), at least complex64; under
    torch.compile its (cos, sin) pair instead."""
    work = torch.promote_types(dtype, torch.float32)
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = (positions.to(work)[:, :, None] * inv_freq.to(work))[:, :, None]
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
