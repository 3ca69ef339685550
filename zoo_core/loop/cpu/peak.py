"""This CPU's matmul peak, measured: the denominator of MFU on CPU.

CPUs have no datasheet number that holds across SKUs, clocks, VMs and thread
counts, so the peak is a short GEMM calibration: the best of a few square
matmuls (N = 1024, smaller where one call takes over SLOW_CALL_S); fp32
through torch's BLAS and oneDNN, whichever is faster; bf16 through torch.mm,
which uses AMX or AVX512-BF16 where the CPU has them and a slow fallback where
it has neither. Measured once per machine, torch version and thread count and
cached with the other CPU choices (zoo_core/loop/cpu/tune.py). On a loaded machine
the peak comes out low and MFU high: delete the cache file to measure again.
"""

from __future__ import annotations

import time

import torch

from zoo_core.loop.cpu import tune as cpu_tune

N = 1024
SLOW_CALL_S = 0.05


def gemm_peak(dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of the best n x n x n matmul in `dtype` on this CPU (cached)."""
    name = str(dtype).replace("torch.", "")
    entry = cpu_tune.cached("peak", f"gemm-{name}", lambda: calibrate(dtype))
    return float(entry["flops"])


def calibrate(dtype: torch.dtype = torch.float32) -> dict:
    """Measure now, uncached: {"flops", "route", "n", "threads"} (benchmarks pair it with their timings)."""
    n = _size(dtype)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen).to(dtype), torch.randn(n, n, generator=gen).to(dtype)
    candidates = {"aten": lambda: torch.mm(a, b)}
    if dtype == torch.float32:
        from zoo_core.loop.cpu.linear import _onednn_mm, onednn_available

        if onednn_available() is None:
            bt = b.t().contiguous()
            candidates["onednn"] = lambda: _onednn_mm(a, bt, None)
    with torch.no_grad():
        best = cpu_tune.paired_medians(candidates, rounds=5, budget_s=1.0, reducer=min)
    route = min(best, key=best.get)
    return {"flops": 2 * n**3 / best[route], "route": route, "n": n, "threads": torch.get_num_threads()}


def _size(dtype: torch.dtype) -> int:
    """N, doubled from N // 4 while a matmul takes under SLOW_CALL_S: a CPU that emulates bf16
    (10-100x slower than fp32 on AVX2) is calibrated at a smaller size, in a second, not minutes."""
    n = max(N // 4, 16)
    while n < N:
        x = torch.ones(n, n, dtype=dtype)
        torch.mm(x, x)
        t0 = time.perf_counter()
        torch.mm(x, x)
        if time.perf_counter() - t0 > SLOW_CALL_S:
            break
        n *= 2
    return n
