"""Causal multi-head attention (Vaswani et al. 2017) with grouped-query heads (Ainslie et al. 2023),
RoPE (Su et al. 2021) or learned absolute positions, an optional sliding window and a KV-cache step.

    x       <- Conv_k(x);  x <- x + P[pos]           optional: conv=k, position=learned (inputs.py)
    q, k, v  = W_q x, W_k x, W_v x                   n_heads query heads, n_kv_heads key/value heads,
                                                     each kv head shared by n_heads / n_kv_heads queries
    q, k    <- RoPE(q, pos), RoPE(k, pos)            position=rope (rope.py), the first rope_fraction dims
    o_i      = sum_j softmax_j(q_i . k_j / sqrt(d) + M_ij) v_j
               M_ij = 0 if 0 <= pos_i - pos_j < window (window: None = no limit), else -inf
    y        = W_o o

Documents (data.documents=reset, `resets` in forward, `reset` in step): M_ij is also -inf when
key j precedes query i's document, so attention is block-diagonal causal (the window inside the
document), and pos counts from the document's start (RoPE, learned positions; the short conv
reads zeros before it). The KV cache keeps stream positions and each row's document `start`, so
a later segment or step sees only its current document's keys.

Three paths, as every zoo mixer has, picked once per forward by `attention_path`:
* naive (`reference.naive_attention`, with the reference RoPE): the softmax equation, materialised;
* fast: flash-attn on CUDA when installed (`flash.py`), else PyTorch SDPA (is_causal; with a
  KV cache or documents, SDPA under a mask in query blocks, on CPU and GPU alike; see
  `mask_blocks`); on CPU, plain causal attention takes SDPA or explicit matmuls, whichever a
  timing at the shape chose (`cpu_route.py`);
* step: one token against the KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from zoo_attention import cpu_route, flash
from zoo_attention.inputs import add_positions, short_conv
from zoo_attention.reference import allowed, naive_attention
from zoo_attention.rope import rope_qk
from zoo_core.interfaces import Mixer

BACKENDS = ("auto", "sdpa", "matmul", "naive")


@dataclass
class AttentionConfig:
    #: Query heads; default dim // head_dim.
    n_heads: int | None = None
    head_dim: int = 64
    #: Key/value heads for grouped-query attention; default n_heads.
    n_kv_heads: int | None = None
    #: Sliding window (local attention): each query sees this many positions, itself included.
    window: int | None = None
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
    #: auto (flash-attn on CUDA if installed; on CPU, SDPA or matmul by measurement; else SDPA) |
    #: sdpa | matmul (explicit matmuls for plain causal attention, else SDPA) | naive
    backend: str = "auto"


class Attention(Mixer):
    supports_resets = True

    def __init__(self, dim: int, config: AttentionConfig) -> None:
        super().__init__(dim, config)
        self.head_dim = config.head_dim
        self.n_heads = config.n_heads or max(1, dim // config.head_dim)
        self.n_kv_heads = config.n_kv_heads or self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if config.backend not in BACKENDS:
            raise ValueError(f"attention backend '{config.backend}' is not one of {', '.join(BACKENDS)}")
        if config.position not in ("rope", "learned", "none"):
            raise ValueError(f"attention position '{config.position}' is not one of rope, learned, none")
        self.window = config.window
        self.rope_dim = int(self.head_dim * config.rope_fraction)
        if not 0 < config.rope_fraction <= 1 or self.rope_dim % 2:
            raise ValueError(
                f"attention rope_fraction={config.rope_fraction} must be in (0, 1] and give an even "
                f"number of dims of head_dim={self.head_dim}"
            )
        self.pos_embed = nn.Parameter(torch.empty(config.max_positions, dim)) if config.position == "learned" else None
        if config.conv < 0 or config.conv == 1:
            raise ValueError(f"attention conv={config.conv}: give a kernel of 2 or more, or 0 for none")
        self.conv = nn.Conv1d(dim, dim, config.conv, groups=dim) if config.conv else None
        self.wq = nn.Linear(dim, self.n_heads * self.head_dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, dim, bias=config.out_bias)

    # -- q, k, v ---------------------------------------------------------------------
    def _project(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v as (B, T, heads, head_dim), learned positions added to x first."""
        B, T, _ = x.shape
        if self.pos_embed is not None:
            x = add_positions(x, self.pos_embed, positions)
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k, v = self.wkv(x).view(B, T, 2, self.n_kv_heads, self.head_dim).unbind(2)
        return q, k, v

    def _rope(
        self, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, dtype: torch.dtype, reference: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """RoPE on q and k (position=rope; `reference`: the equation's form, else the fast one);
        q, k, v to (B, heads, T, head_dim)."""
        if self.config.position != "rope":
            return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = rope_qk(q, k, positions, self.rope_dim, self.config.rope_theta, dtype, reference)
        return q, k, v.transpose(1, 2)

    def _qkv(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v as (B, heads, T, head_dim) with the position signal; RoPE's form from the backend."""
        q, k, v = self._project(x, positions)
        return self._rope(q, k, v, positions, x.dtype, reference=self.config.backend == "naive")

    def _out(self, o: Tensor) -> Tensor:
        B, H, T, hd = o.shape
        return self.wo(o.transpose(1, 2).reshape(B, T, H * hd))

    def _short_conv(
        self, x: Tensor, state: dict[str, Tensor] | None, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if self.conv is None:
            return x, None
        return short_conv(self.conv, x, None if state is None else state["conv"], positions)

    # -- forward: naive / flash-attn / SDPA, one pick -----------------------------------
    def forward(
        self,
        x: Tensor,
        state: dict[str, Tensor] | None = None,
        return_state: bool = False,
        resets: Tensor | None = None,
    ):
        """`resets` (B, T) bool, data.documents=reset: True where a document starts. Queries then
        attend only inside their document and positions restart at 0 there (see `documents`)."""
        B, T, _ = x.shape
        cached = state is not None and state["k"].shape[2] > 0
        first = state["next"] if state is not None else torch.zeros(B, dtype=torch.long, device=x.device)
        q_abs = first[:, None] + torch.arange(T, device=x.device)  # stream positions
        q_start = documents(q_abs, resets, state)  # None: the stream from 0, nothing to mask
        q_pos = q_abs if q_start is None else q_abs - q_start  # positions in the document
        x, conv_state = self._short_conv(x, state, None if resets is None else q_pos)
        q, k, v = self._project(x, q_pos)
        plain = not cached and resets is None
        full = plain and (not self.window or self.window >= T)  # nothing masked but the future
        path = attention_path(self.config.backend, q, plain_causal=plain, resets=resets is not None, full=full, k=k)
        q, k, v = self._rope(q, k, v, q_pos, x.dtype, reference=path == "naive")
        k_abs = q_abs
        if cached:
            k = torch.cat([state["k"], k], dim=2)
            v = torch.cat([state["v"], v], dim=2)
            k_abs = torch.cat([state["pos"], q_abs], dim=1)
        blocks = None
        if path == "sdpa" and resets is not None and state is None:
            blocks = shared_mask_blocks(resets, q_abs, self.window, q_start, q.dtype)
        o = attend(path, q, k, v, q_abs, k_abs, self.window, plain_causal=plain, q_start=q_start, blocks=blocks)
        if not return_state:
            return self._out(o), None
        start = _start(state, first) if q_start is None else q_start[:, -1]
        return self._out(o), self._trim(k, v, k_abs, q_abs[:, -1] + 1, start, conv_state)

    # -- recurrent step: one token against the KV cache ---------------------------------
    def step(self, x: Tensor, state: dict[str, Tensor], reset: Tensor | None = None):
        """`reset` (B,) bool: rows whose document starts at this token (their earlier keys and
        inputs become invisible and their position restarts at 0)."""
        nxt = state["next"]
        start = _start(state, nxt)
        if reset is not None:
            start = torch.where(reset, nxt, start)
            if self.conv is not None:
                state = {**state, "conv": state["conv"] * (~reset)[:, None, None].to(state["conv"].dtype)}
        pos = (nxt - start)[:, None]  # the position in the document
        xc, conv_state = self._short_conv(x[:, None], state)
        q, k, v = self._qkv(xc, pos)
        k = torch.cat([state["k"], k], dim=2)
        v = torch.cat([state["v"], v], dim=2)
        k_abs = torch.cat([state["pos"], nxt[:, None]], dim=1)
        groups = self.n_heads // self.n_kv_heads
        kr, vr = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        scores = (q @ kr.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, 1, S)
        visible = allowed(nxt[:, None], k_abs, self.window, start[:, None])
        scores = scores.masked_fill(~visible[:, None], float("-inf"))
        o = scores.softmax(-1) @ vr
        return self._out(o)[:, 0], self._trim(k, v, k_abs, nxt + 1, start, conv_state)

    def _trim(
        self,
        k: Tensor,
        v: Tensor,
        k_abs: Tensor,
        next_pos: Tensor,
        start: Tensor,
        conv_state: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The cache: k, v and their stream positions `pos`, the `next` stream position and
        `start`, where the current document starts (keys before it are invisible; positions
        count from it). With a window, later queries never see keys older than window - 1 steps."""
        if self.window and k.shape[2] > self.window - 1:
            keep = max(self.window - 1, 0)
            k, v, k_abs = k[:, :, k.shape[2] - keep :], v[:, :, v.shape[2] - keep :], k_abs[:, k_abs.shape[1] - keep :]
        state = {"k": k, "v": v, "pos": k_abs, "next": next_pos, "start": start}
        if conv_state is not None:
            state["conv"] = conv_state
        return state

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> dict[str, Tensor]:
        dtype = dtype or self.wq.weight.dtype
        device = device or self.wq.weight.device
        empty = torch.zeros(batch_size, self.n_kv_heads, 0, self.head_dim, device=device, dtype=dtype)
        state = {
            "k": empty,
            "v": empty.clone(),
            "pos": torch.zeros(batch_size, 0, dtype=torch.long, device=device),
            "next": torch.zeros(batch_size, dtype=torch.long, device=device),
            "start": torch.zeros(batch_size, dtype=torch.long, device=device),
        }
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


# -- documents (data.documents=reset) ------------------------------------------------------


def _start(state: dict[str, Tensor] | None, like: Tensor) -> Tensor:
    """The stream position where each row's current document starts (0: the stream's start)."""
    if state is None or "start" not in state:
        return torch.zeros_like(like)
    return state["start"]


def documents(q_abs: Tensor, resets: Tensor | None, state: dict[str, Tensor] | None) -> Tensor | None:
    """(B, T) the stream position where each query's document starts: the last reset at or
    before it, else the incoming state's `start` (the first document of a row continues the
    state's). None without resets and without a state: the stream starts at 0, nothing to mask."""
    if resets is None:
        return None if state is None else _start(state, q_abs[:, 0])[:, None].expand_as(q_abs)
    marks = torch.where(resets, q_abs, _start(state, q_abs[:, 0])[:, None])
    return marks.cummax(1).values


# -- the paths of a forward -------------------------------------------------------------


def attention_path(
    backend: str, q: Tensor, plain_causal: bool, resets: bool = False, full: bool = False, k: Tensor | None = None
) -> str:
    """naive | flash | matmul | sdpa, for q (B, T, H, hd) and k (B, T, Hkv, hd). flash-attn
    (imported lazily; one line when it is missing on a GPU) under backend=auto for CUDA
    half-precision q with nothing cached and no document resets. `full`: plain causal with no
    window shorter than the segment; then backend=matmul takes the matmuls, and backend=auto on
    CPU whichever of SDPA and matmul measured faster at the shape (`cpu_route.choose`). Else SDPA
    (with resets: SDPA with the document mask, said once where flash-attn would run)."""
    if backend == "naive":
        return "naive"
    if backend == "matmul" and full:
        return "matmul"
    if backend == "auto" and (plain_causal or resets) and flash.usable(q):
        if plain_causal:
            return "flash"
        flash.say_resets_use_sdpa()
    if backend == "auto" and full and k is not None and q.device.type == "cpu":
        B, T, H, hd = q.shape
        return cpu_route.choose(B, H, k.shape[2], T, hd, cpu_route.compute_dtype(q), q.requires_grad)
    return "sdpa"


def attend(
    path: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_pos: Tensor,
    k_pos: Tensor,
    window: int | None,
    plain_causal: bool,
    q_start: Tensor | None = None,
    blocks: list[MaskBlock] | None = None,
) -> Tensor:
    """o (B, H, Tq, hd) from q (B, H, Tq, hd) and k, v (B, H_kv, Tk, hd) on `path`; q_pos, k_pos
    stream positions, `q_start` (B, Tq) where each query's document starts (see `allowed`);
    `blocks`: the SDPA mask already cut (`mask_blocks`), else cut here."""
    if path == "flash":
        return flash.attention(q, k, v, window)
    if path == "matmul":  # plain causal (attention_path)
        return cpu_route.matmul_attention(q, k, v)
    gqa = q.shape[1] > k.shape[1]  # SDPA reads the shared kv heads in place, no copies
    # A window that spans the whole segment is plain causal attention: take SDPA's
    # fused causal kernel rather than materialising a (T, T) mask.
    if path == "sdpa" and plain_causal and (not window or window >= k.shape[2]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    # A KV cache, a shorter window or documents (block-diagonal causal): SDPA under a mask.
    if path == "naive":
        return naive_attention(q, k, v, allowed(q_pos, k_pos, window, q_start))
    return masked_sdpa(q, k, v, blocks or mask_blocks(q_pos, k_pos, window, q_start, q.dtype), gqa)


#: Queries per SDPA call under a mask (see `mask_blocks`).
QUERY_BLOCK = 128

#: A block of queries under a mask: its queries a:b, its keys lo:hi, and the mask (B, 1, b - a,
#: hi - lo): with documents additive (0 where a key is visible, -inf where not), else boolean.
MaskBlock = tuple[int, int, int, int, Tensor]


def mask_blocks(
    q_pos: Tensor, k_pos: Tensor, window: int | None, q_start: Tensor | None, dtype: torch.dtype
) -> list[MaskBlock]:
    """The mask `allowed` gives, cut into blocks of QUERY_BLOCK queries, each over only the keys
    one of its queries can see: up to its last query (causal), with a window from its first
    query's window on, and with documents from the earliest start (over rows) of its first
    query's document (each later query's document starts there or later). SDPA computes every
    (query, key) pair its mask covers, the masked ones too, so packed short documents cost about
    what their own spans do. Keys are the cached ones then the segment's, consecutive stream
    positions (Tk - Tq cached). With documents the mask is additive in the compute dtype: SDPA on
    CPU would convert a boolean one on every call; its flash kernel reads this one as is. Without
    documents (a KV cache, a window), the boolean mask as before."""
    Tq, Tk = q_pos.shape[1], k_pos.shape[1]
    cached = Tk - Tq
    firsts = list(range(0, Tq, QUERY_BLOCK))
    doc_lo = [0] * len(firsts)
    if q_start is not None and not torch.compiler.is_compiling():
        # one host read per forward (a graph break under torch.compile, which keeps all keys)
        doc_lo = (q_start[:, ::QUERY_BLOCK] - k_pos[:, :1]).clamp_min(0).amin(0).tolist()
    blocks = []
    for a, first_key in zip(firsts, doc_lo):
        b = min(Tq, a + QUERY_BLOCK)
        lo = max(0, cached + a - window + 1, first_key) if window and Tq > QUERY_BLOCK else first_key
        hi = cached + b
        visible = allowed(q_pos[:, a:b], k_pos[:, lo:hi], window, None if q_start is None else q_start[:, a:b])
        mask = visible if q_start is None else additive(visible, dtype)
        blocks.append((a, b, lo, hi, mask[:, None]))
    return blocks


#: The blocks of the last `shared_mask_blocks` call, by its resets tensor (one entry at most,
#: gone with the tensor).
_shared: WeakIdKeyDictionary = WeakIdKeyDictionary()


def shared_mask_blocks(
    resets: Tensor, q_pos: Tensor, window: int | None, q_start: Tensor, dtype: torch.dtype
) -> list[MaskBlock]:
    """`mask_blocks` of a forward without state (training's), made once for all the layers of a
    model's forward: they get the same resets tensor, and without state the positions follow
    from it alone. Kept for that tensor (while it lives and is not modified) and its shape,
    window, dtype, device and inference mode; under torch.compile, or for an inference tensor (no
    version counter), made per call."""
    if torch.compiler.is_compiling() or resets.is_inference():
        return mask_blocks(q_pos, q_pos, window, q_start, dtype)
    key = (resets._version, tuple(resets.shape), window, dtype, q_pos.device, QUERY_BLOCK)
    key += (torch.is_inference_mode_enabled(),)
    hit = _shared.get(resets)
    if hit is not None and hit[0] == key:
        return hit[1]
    blocks = mask_blocks(q_pos, q_pos, window, q_start, dtype)
    _shared.clear()
    _shared[resets] = (key, blocks)
    return blocks


def additive(visible: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask as SDPA's additive one: 0 where visible, -inf where not."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, float("-inf"))


def masked_sdpa(q: Tensor, k: Tensor, v: Tensor, blocks: list[MaskBlock], gqa: bool) -> Tensor:
    """SDPA over the query blocks of `mask_blocks`, each against its own keys and mask."""
    if len(blocks) == 1 and blocks[0][2:4] == (0, k.shape[2]):  # one call over everything
        return F.scaled_dot_product_attention(q, k, v, attn_mask=blocks[0][4], enable_gqa=gqa)
    outs = [
        F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, lo:hi], v[:, :, lo:hi], attn_mask=mask, enable_gqa=gqa)
        for a, b, lo, hi, mask in blocks
    ]
    return outs[0] if len(outs) == 1 else torch.cat(outs, 2)
