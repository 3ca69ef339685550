"""Plain causal attention on CPU: PyTorch SDPA or explicit matmuls, whichever measured faster here.

SDPA's CPU flash kernel is not the fastest CPU attention at every shape and dtype: on a 2-core
AMD EPYC (Zen 4, AVX512-BF16) at B=8, H=4, T=256, hd=64 its bf16 forward + backward took about
what its fp32 one did, while matmuls (scores in bf16, softmax in fp32) were clearly faster; at
T=1024 SDPA won again, and a CPU with AMX may answer differently. So under `backend=auto`
a plain causal forward on CPU (no KV cache, no document resets, no window shorter than the
segment) takes `matmul_attention` or SDPA as a short timing of both at that shape said (issue
#26: hardware-dependent CPU choices are measured, not assumed): `choose` times forward (and,
when training, backward) of each on random tensors of the shape and compute dtype, keeps the
answer in the CPU tune cache (`zoo_core.cpu_tune`, section "attention", per CPU model, flags,
torch version and threads), and says it in one stderr line per shape. It takes SDPA untimed
where matmul would keep too many scores (`SCORES_BUDGET`), where the work is too small for a
timing to mean anything (`TINY_MACS`), for float64 (tests), and under torch.compile; of these
only the first is said (a model's shape, where one might expect a timing).

    S = q k^T / sqrt(hd) + M      in q's dtype, M additive causal (0 / -inf), per query block
    P = softmax(S) computed in float32 (float64 for float64), stored in q's dtype
    o = P v

Queries go in blocks of `BLOCK`, each against only the keys up to its last query, so the score
blocks wholly above the diagonal are never computed. Grouped kv heads are not repeated: the
queries of a kv head's group are stacked as one batch entry's rows.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo_core import cpu_tune

#: The tune cache's section.
SECTION = "attention"
#: Queries per block of `matmul_attention`.
BLOCK = 128
#: matmul keeps the (B, H, T, T) probabilities for the backward: above this many bytes of them
#: (in the compute dtype) per layer, SDPA without timing.
SCORES_BUDGET = 64 << 20
OVER_BUDGET = "scores over"
#: Below this many multiply-adds (B H T^2 hd) SDPA without timing: a call takes well under a
#: millisecond, so the kernel hardly matters and a timing would be noise.
TINY_MACS = 1 << 22
#: matmul is chosen only where it measured this much faster than SDPA.
MARGIN = 1.05
#: Dtypes the choice is timed for (float64 is the tests' dtype: SDPA, as before).
TIMED = (torch.float32, torch.bfloat16, torch.float16)

_masks: dict[tuple, list[tuple[int, int, Tensor]]] = {}  # (T, groups, dtype, device, BLOCK) -> blocks
_decided: dict[tuple, str] = {}  # this process's choices: (B, H, Hkv, T, hd, dtype, training) -> kernel


# -- the kernel --------------------------------------------------------------------------


def _blocks(T: int, groups: int, dtype: torch.dtype, device: torch.device) -> list[tuple[int, int, Tensor]]:
    """(a, b, mask) per query block a:b: the additive causal mask of its queries over keys 0:b,
    repeated for the `groups` query heads stacked per kv head, (groups * (b - a), b)."""
    key = (T, groups, dtype, device, BLOCK)
    hit = _masks.get(key)
    if hit is None:
        if len(_masks) >= 16:
            _masks.clear()
        full = torch.full((T, T), float("-inf"), dtype=dtype, device=device).triu_(1)
        hit = []
        for a in range(0, T, BLOCK):
            b = min(T, a + BLOCK)
            mask = full[a:b, :b]
            hit.append((a, b, mask.repeat(groups, 1) if groups > 1 else mask.contiguous()))
        _masks[key] = hit
    return hit


def compute_dtype(q: Tensor) -> torch.dtype:
    """The dtype SDPA and the matmuls compute in: q's, or CPU autocast's for float32 q under it."""
    if q.dtype == torch.float32 and q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return q.dtype


def matmul_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal softmax(q k^T / sqrt(hd)) v for q (B, H, T, hd), k, v (B, Hkv, T, hd) -> (B, H, T, hd):
    scores in the compute dtype, softmax computed in at least float32, query blocks of BLOCK."""
    B, H, T, hd = q.shape
    Hkv = k.shape[1]
    g = H // Hkv
    dtype = compute_dtype(q)
    # one batch entry per (row, kv head): its g query heads' rows stacked, keys read in place
    q5 = q.reshape(B * Hkv, g, T, hd)
    k3, v3 = k.reshape(B * Hkv, T, hd), v.reshape(B * Hkv, T, hd)
    outs = []
    for a, b, mask in _blocks(T, g, dtype, q.device):
        qb = q5[:, :, a:b].reshape(B * Hkv, g * (b - a), hd)
        s = torch.baddbmm(mask, qb, k3[:, :b].transpose(1, 2), alpha=1 / math.sqrt(hd))
        # bf16/fp16 in, fp32 inside: PyTorch's softmax kernels convert, reduce and exponentiate
        # in float32 and round the probabilities once (as softmax(dtype=float32).to(dtype) does,
        # but without a float32 copy to write, read back and keep for the backward)
        p = torch.softmax(s, -1)
        outs.append(torch.bmm(p, v3[:, :b]).view(B, Hkv, g, b - a, hd).permute(0, 3, 1, 2, 4))
    # laid out (B, T, heads, hd), seen as (B, heads, T, hd), as SDPA's CPU output is: the mixer's
    # output projection reads it without a copy
    return torch.cat(outs, 1).view(B, T, H, hd).transpose(1, 2)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The other candidate: SDPA's causal kernel (grouped kv heads read in place)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] > k.shape[1])


# -- choosing by measurement ---------------------------------------------------------------


def _time(B: int, H: int, Hkv: int, T: int, hd: int, dtype: torch.dtype, training: bool) -> dict[str, float]:
    """Seconds of each kernel at the shape (forward, plus backward when training): the best of
    interleaved rounds, as cpu_linear takes, since a busy machine only ever adds time (and adds
    more to the matmuls' several parallel regions than to SDPA's one, when another process
    holds a core)."""
    gen = torch.Generator().manual_seed(0)
    # (B, T, heads, hd) seen as (B, heads, T, hd), as the mixer hands them over
    qkv = [torch.randn(B, T, h, hd, generator=gen).to(dtype).requires_grad_(training) for h in (H, Hkv, Hkv)]
    go = torch.randn(B, T, H * hd, generator=gen).to(dtype)

    def run(fn):
        def once():
            o = fn(*(t.transpose(1, 2) for t in qkv)).transpose(1, 2).reshape(B, T, H * hd)  # as `_out`
            if training:
                torch.autograd.grad(o, qkv, go)

        return once

    with torch.autocast("cpu", enabled=False), torch.set_grad_enabled(training):
        return cpu_tune.paired_medians(
            {"sdpa": run(sdpa_attention), "matmul": run(matmul_attention)}, rounds=9, reducer=min
        )


def measure(B: int, H: int, Hkv: int, T: int, hd: int, dtype: torch.dtype, training: bool) -> dict:
    """The cache entry: both timings, SDPA's over matmul's, and the kernel that ratio picks."""
    t = _time(B, H, Hkv, T, hd, dtype, training)
    entry = {f"{name}_ms": round(1e3 * seconds, 4) for name, seconds in t.items()}
    entry["matmul_vs_sdpa"] = round(t["sdpa"] / t["matmul"], 3)
    entry["kernel"] = "matmul" if entry["matmul_vs_sdpa"] >= MARGIN else "sdpa"
    return entry


def untimed(B: int, H: int, T: int, hd: int, dtype: torch.dtype) -> str | None:
    """Why SDPA is taken without timing at this shape, or None (time it)."""
    if dtype not in TIMED:
        return f"{dtype} is not timed"
    if B * H * T * T * hd < TINY_MACS:
        return "tiny"
    if B * H * T * T * dtype.itemsize > SCORES_BUDGET:
        return f"{OVER_BUDGET} {SCORES_BUDGET >> 20} MiB"
    return None


def choose(B: int, H: int, Hkv: int, T: int, hd: int, dtype: torch.dtype, training: bool) -> str:
    """sdpa | matmul for plain causal CPU attention at this shape under backend=auto: measured once
    per machine and shape, then cached; SDPA untimed under torch.compile and where `untimed` says."""
    if torch.compiler.is_compiling():
        return "sdpa"
    key = (B, H, Hkv, T, hd, dtype, training)
    kernel = _decided.get(key)
    if kernel is not None:
        return kernel
    skey = cpu_tune.shape_key((B, H, Hkv, T, hd)) + f" {str(dtype).removeprefix('torch.')}"
    skey += " train" if training else " infer"
    why = untimed(B, H, T, hd, dtype)
    if why is None:
        entry = cpu_tune.lookup(SECTION, skey)
        how = "cached"
        if entry is None:
            entry, how = measure(B, H, Hkv, T, hd, dtype, training), "measured"
            cpu_tune.store(SECTION, skey, entry)
        kernel, note = entry["kernel"], f"{entry['matmul_vs_sdpa']:.2f}x for matmul, {how}"
    else:
        kernel, note = "sdpa", f"untimed: {why}"
    if why is None or why.startswith(OVER_BUDGET):  # tiny shapes and float64 pass quietly
        print(
            f"zoo-attention: CPU attention kernel per shape (B, H, Hkv, T, hd, dtype): {skey} {kernel} "
            f"({note}) [{cpu_tune.cache_path()}]",
            file=sys.stderr,
        )
    _decided[key] = kernel
    return kernel


def choices() -> dict[str, str]:
    """This process's decisions so far, `{"BxHxHkvxTxhd dtype train|infer": "sdpa" | "matmul"}`
    (for benchmark records)."""
    out = {}
    for (B, H, Hkv, T, hd, dtype, training), kernel in _decided.items():
        key = cpu_tune.shape_key((B, H, Hkv, T, hd)) + f" {str(dtype).removeprefix('torch.')}"
        out[key + (" train" if training else " infer")] = kernel
    return out


def forget() -> None:
    """Drop this process's choices and masks (tests)."""
    _decided.clear()
    _masks.clear()
