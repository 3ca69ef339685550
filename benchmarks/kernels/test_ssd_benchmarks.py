"""Microbenchmarks of Mamba-2's SSD scan: implementation x direction x shape x dtype.

Run: pytest benchmarks/kernels/test_ssd_benchmarks.py --benchmark-only [--benchmark-json=out.json]
     (report.py prints the SSD table, with TFLOP/s, below the scans' one)

Implementations: `torch-chunked` (zoo_kernels/ssd/chunk.py, the CPU path and the GPU path without
triton), `triton` (zoo_kernels/ssd/triton.py; GPU only: the CPU interpreter is for tests) and
`mamba-ssm` (mamba_chunk_scan_combined; GPU only, when installed).

Shapes (batch, T, heads H, headdim P, ngroups G, d_state N, chunk L): on GPU the SSD of the peers
benchmark's Mamba-2 at 125M (benchmarks/peers/models.py: d_model 768, expand 2, so 24 heads of 64,
d_state 64, chunk 64) at batch 8 x seq 2048, the same at 2 x 8192, and with d_state 128 (mamba-ssm's
Mamba2 default); on CPU a smaller one that the torch path times in seconds.

Each case reports median ms and, in extra_info:
- GB/s: every input read once and every output written once (fwd+bwd adds the upstream
  gradients read and the input gradients written), as in test_scan_benchmarks.py;
- TFLOP/s: the chunked algorithm's forward multiply-adds (x2) as the kernels compute them
  (dense L x L blocks): per chunk 2 L^2 N per group for C.B, and per head 2 L^2 P for the
  intra-chunk product, 2 L P N for the chunk state, 2 L P N for the entering state's output
  and 2 P N for the state passing; fwd+bwd counts 3x the forward (the usual model-FLOP rule),
  not what a backward actually recomputes.
"""

import importlib.util
import os
import time

import pytest
import torch
import torch.nn.functional as F

from zoo_kernels.backends import triton_installed
from zoo_kernels.ssd import ssd_chunked, ssd_triton

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
HAS_MAMBA_SSM = CUDA and importlib.util.find_spec("mamba_ssm") is not None
TARGET_SECONDS = float(os.environ.get("ZOO_BENCH_SECONDS", 0.3 if CUDA else 1.5))
# (batch, T, H, P, G, N, L)
SHAPES = (
    [(8, 2048, 24, 64, 1, 64, 64), (2, 8192, 24, 64, 1, 64, 64), (8, 2048, 24, 64, 1, 128, 64)]
    if CUDA
    else [(2, 512, 8, 64, 1, 64, 64)]
)
IMPLS = ["torch-chunked", "triton", "mamba-ssm"]


def make_inputs(shape, dtype):
    b, T, H, P, G, N, _ = shape
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def randn(*s):
        return torch.randn(*s, generator=gen, device=DEVICE, dtype=torch.float32)

    # dt and A in float32, as Mamba-2 passes them; A in [-16, -1] like its init
    return {
        "x": randn(b, T, H, P).to(dtype),
        "dt": F.softplus(randn(b, T, H) - 3),
        "A": -(1 + 15 * torch.rand(H, generator=gen, device=DEVICE)),
        "B": randn(b, T, G, N).to(dtype),
        "C": randn(b, T, G, N).to(dtype),
        "h0": randn(b, H, P, N),
    }


def forward_flops(shape):
    b, T, H, P, G, N, L = shape
    chunks = -(-T // L)
    return b * chunks * (G * 2 * L * L * N + H * (2 * L * L * P + 4 * L * P * N + 2 * P * N))


def implementation(impl, chunk):
    if impl == "torch-chunked":
        return lambda x, dt, A, B, C, h0: ssd_chunked(x, dt, A, B, C, chunk, h0)
    if impl == "triton":
        return lambda x, dt, A, B, C, h0: ssd_triton(x, dt, A, B, C, chunk, h0)
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return lambda x, dt, A, B, C, h0: mamba_chunk_scan_combined(
        x, dt, A, B, C, chunk, initial_states=h0, return_final_states=True
    )


def sync():
    if CUDA:
        torch.cuda.synchronize()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ["float32"] + (["bfloat16"] if CUDA else []))
def test_ssd(benchmark, device_bandwidth_gbs, impl, direction, shape, dtype):
    if impl != "torch-chunked" and not CUDA:
        pytest.skip(f"{impl} timings need a GPU (the Triton interpreter on CPU is for tests only)")
    if impl == "triton" and not triton_installed():
        pytest.skip("triton is not installed")
    if impl == "mamba-ssm" and not HAS_MAMBA_SSM:
        pytest.skip("mamba-ssm is not installed (pip install 'zoo-mamba[cuda]')")
    backward = direction == "fwd+bwd"
    inputs = make_inputs(shape, getattr(torch, dtype))
    tensors = [v.requires_grad_(backward) for v in inputs.values()]
    fn = implementation(impl, shape[-1])

    def run():
        out = fn(**inputs)
        if backward:
            torch.autograd.grad(out, tensors, [torch.ones_like(o) for o in out])
        sync()
        return out

    start = time.perf_counter()
    outputs = run()  # warm-up (compiles the Triton kernels) and sizes the rounds
    once = time.perf_counter() - start
    rounds = max(3, min(50, int(TARGET_SECONDS / max(once, 1e-6))))
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)

    seconds = benchmark.stats.stats.median
    moved = sum(t.nbytes for t in tensors) + sum(o.nbytes for o in outputs)
    moved *= 2 if backward else 1
    flops = forward_flops(shape) * (3 if backward else 1)
    info = benchmark.extra_info
    info.update(
        op="ssd",
        impl=impl,
        direction=direction,
        shape=list(shape),
        dtype=dtype,
        rounds=rounds,
        threads=torch.get_num_threads(),
        ms=round(seconds * 1e3, 3),
        bytes=moved,
        flops=flops,
        gbs=round(moved / seconds / 1e9, 2),
        tflops=round(flops / seconds / 1e12, 6),
    )
    if device_bandwidth_gbs:
        info["device_gbs"] = round(device_bandwidth_gbs, 1)
        info["pct_of_device_bw"] = round(100 * moved / seconds / 1e9 / device_bandwidth_gbs, 1)
