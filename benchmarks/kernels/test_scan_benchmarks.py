"""Microbenchmarks: op x implementation x direction x sequence length.

Run: pytest benchmarks/kernels --benchmark-only [--benchmark-json=out.json]
Shapes are (batch 8, T, channels 256) for T in 256..16K, plus (8, 65536, 1536) on GPU;
selective_scan (Mamba-1) adds a state of N = 16 per channel. Its `torch-chunked`
row is its flat path (linear_scan over the D*N channels, what runs without a C
compiler), its `torch` row the fused compiled kernel, and its `triton` row the
fused Triton kernels (zoo_kernels/selective/triton.py; no (B, T, D, N) tensors, so it also
runs at (8, 65536, 1536)).
Each case reports median ms and effective GB/s in extra_info, where the traffic model
counts every input read once and every output written once (fwd+bwd adds the
upstream grads read and the input grads written); on GPU also the % of the
measured device copy bandwidth.
"""

import os
import time

import pytest
import torch

import zoo_kernels

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
LENGTHS = [256, 1024, 4096, 16384]
NAIVE_MAX_T = 4096  # the naive Python loop takes seconds per call beyond this
SHAPES = [(8, t, 256) for t in LENGTHS] + ([(8, 65536, 1536)] if CUDA else [])
# torch-chunked: the torch backend with its compiled CPU kernel switched off
# (ZOO_KERNELS_CPP=0), i.e. the pure-PyTorch chunked loops of zoo_kernels/scan/chunk.py.
IMPLS = ["naive", "torch", "torch-chunked", "triton"]
# per case: rounds are sized from one warm-up call (GPU timings settle sooner)
TARGET_SECONDS = float(os.environ.get("ZOO_BENCH_SECONDS", 0.3 if CUDA else 1.5))
SELECTIVE_STATE = 16  # Mamba-1's d_state


def make_inputs(op, shape, dtype):
    b, t, d = shape
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def rand(*s):
        return torch.rand(*s, generator=gen, device=DEVICE, dtype=torch.float32)

    if op == "linear_scan":
        return {"a": (0.5 + 0.5 * rand(b, t, d)).to(dtype), "x": (rand(b, t, d) - 0.5).to(dtype), "h0": rand(b, d)}
    if op == "log_linear_scan":
        return {
            "log_a": (0.5 + 0.5 * rand(b, t, d)).log().to(dtype),
            "log_x": rand(b, t, d).to(dtype),
            "log_h0": rand(b, d),
        }
    if op == "selective_scan":
        n = SELECTIVE_STATE
        return {
            "u": (rand(b, t, d) - 0.5).to(dtype),
            "dt": (0.1 * rand(b, t, d)).to(dtype),
            "A": -(1 + rand(d, n) * n),
            "B": (rand(b, t, n) - 0.5).to(dtype),
            "C": (rand(b, t, n) - 0.5).to(dtype),
            "h0": rand(b, d, n),
        }
    return {
        "x": rand(b, t, d).to(dtype),
        "r_pre": rand(b, t, d).to(dtype),
        "i_pre": rand(b, t, d).to(dtype),
        "a_param": rand(d),
        "h0": rand(b, d),
    }


def traffic_bytes(inputs, outputs, backward):
    moved = sum(t.nbytes for t in inputs) + sum(t.nbytes for t in outputs)
    if backward:  # read the upstream grads, write one grad per input
        moved *= 2
    return moved


def sync():
    if CUDA:
        torch.cuda.synchronize()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", ["linear_scan", "log_linear_scan", "rg_lru", "selective_scan"])
@pytest.mark.parametrize("dtype", ["float32"] + (["bfloat16"] if CUDA else []))
def test_scan(benchmark, device_bandwidth_gbs, monkeypatch, op, impl, direction, shape, dtype):
    if impl == "torch-chunked":
        if CUDA:
            pytest.skip("the compiled-kernel switch only matters on CPU")
        monkeypatch.setenv("ZOO_KERNELS_CPP", "0")
    if impl == "triton" and not CUDA:
        pytest.skip("Triton timings need a GPU (the CPU interpreter is for tests only)")
    if impl == "triton" and "triton" not in zoo_kernels.available_backends():
        pytest.skip("triton is not installed")
    if impl == "naive" and shape[1] > NAIVE_MAX_T:
        pytest.skip(f"naive Python loop skipped beyond T={NAIVE_MAX_T}: too slow")
    if shape[2] > 256 and impl != "triton":
        pytest.skip("the (8, 65536, 1536) shape is a GPU bandwidth target for Triton")
    backward = direction == "fwd+bwd"
    inputs = make_inputs(op, shape, getattr(torch, dtype))
    tensors = [v.requires_grad_(backward) for v in inputs.values()]
    backend = "torch" if impl == "torch-chunked" else impl
    fn = getattr(zoo_kernels, op)  # every op takes backend=

    def run():
        out = fn(**inputs, backend=backend)
        if backward:
            torch.autograd.grad(out, tensors, [torch.ones_like(o) for o in out])
        sync()
        return out

    start = time.perf_counter()
    outputs = run()  # warm-up (compiles Triton kernels) and sizes the rounds
    once = time.perf_counter() - start
    rounds = max(3, min(50, int(TARGET_SECONDS / max(once, 1e-6))))
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)

    seconds = benchmark.stats.stats.median  # robust to other load on the machine
    moved = traffic_bytes(tensors, [o.detach() for o in outputs], backward)
    info = benchmark.extra_info
    info.update(
        op=op,
        impl=impl,
        direction=direction,
        shape=list(shape),
        dtype=dtype,
        rounds=rounds,
        threads=torch.get_num_threads(),
        ms=round(seconds * 1e3, 3),
        bytes=moved,
        gbs=round(moved / seconds / 1e9, 2),
    )
    if device_bandwidth_gbs:
        info["device_gbs"] = round(device_bandwidth_gbs, 1)
        info["pct_of_device_bw"] = round(100 * moved / seconds / 1e9 / device_bandwidth_gbs, 1)
