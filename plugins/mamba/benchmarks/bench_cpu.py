"""CPU timings behind zoo-mamba's path choices (forward + backward, median of repeats).

    python plugins/mamba/benchmarks/bench_cpu.py [--threads 1]

1. Mamba-1 scan: zoo-kernels' fused CPU selective scan and its linear_scan over the
   flattened (D*N) state, against the naive loop and a quadratic per-chunk form
   (SSD-style, decay (L, L, D, N)).
2. Mamba-2: chunked SSD at several chunk sizes against the naive loop.
3. The causal depthwise conv: F.conv1d and W shifted multiply-adds against zoo-kernels'
   fused CPU conv (zoo_kernels.conv.causal_conv1d).
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from zoo_kernels.conv import causal_conv1d
from zoo_kernels.selective import selective_scan_flat, selective_scan_fused
from zoo_mamba.reference import selective_scan_ref, ssd_ref
from zoo_mamba.ssd import ssd_chunked


def bench(fn, inputs, repeats=5):
    leaves = [t.detach().requires_grad_() if t.is_floating_point() else t for t in inputs]
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        out = fn(*leaves)
        sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,))).backward()
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def quadratic_selective_scan(u, dt, A, B, C, L=8):
    """Mamba-1 as an SSD-style masked quadratic form per chunk (the alternative we measured)."""
    b, T, D = u.shape
    nc = T // L
    u, dt, B, C = (t.unflatten(1, (nc, L)) for t in (u, dt, B, C))
    a = torch.cumsum(dt, 2)[..., None] * A  # (b, c, l, D, N)
    causal = torch.ones(L, L, dtype=torch.bool).tril()[:, :, None, None]
    seg = (a[:, :, :, None] - a[:, :, None]).masked_fill(~causal, -float("inf"))
    w = torch.exp(seg) * (C[:, :, :, None, None, :] * B[:, :, None, :, None, :])  # (b, c, l, s, D, N)
    y = torch.einsum("bclsdn,bcsd->bcld", w, dt * u)
    states = torch.einsum("bcldn,bcln,bcld->bcdn", torch.exp(a[:, :, -1:] - a), B, dt * u)
    h = torch.zeros(b, D, A.shape[1])
    ys = []
    for c in range(nc):
        ys.append(y[:, c] + torch.einsum("bldn,bln,bdn->bld", torch.exp(a[:, c]), C[:, c], h))
        h = torch.exp(a[:, c, -1]) * h + states[:, c]
    return torch.stack(ys, 1).flatten(1, 2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s); ms per forward+backward (median)")

    b, T, D, N = 4, 256, 128, 16
    u, B, C = torch.randn(b, T, D), torch.randn(b, T, N), torch.randn(b, T, N)
    dt, A = F.softplus(torch.randn(b, T, D)) * 0.1, -torch.arange(1.0, N + 1).repeat(D, 1)
    print(f"\nMamba-1 scan, (B, T, D, N) = {(b, T, D, N)}")
    print(f"  zoo-kernels fused (C)     {bench(selective_scan_fused, [u, dt, A, B, C]):8.1f}")
    print(f"  zoo-kernels linear_scan   {bench(selective_scan_flat, [u, dt, A, B, C]):8.1f}")
    print(f"  quadratic chunks (L=8)    {bench(quadratic_selective_scan, [u, dt, A, B, C]):8.1f}")
    print(f"  naive loop                {bench(selective_scan_ref, [u, dt, A, B, C], 3):8.1f}")

    H, P, N2 = 4, 64, 64
    x, B2, C2 = torch.randn(b, T, H, P), torch.randn(b, T, 1, N2), torch.randn(b, T, 1, N2)
    dt2, A2 = F.softplus(torch.randn(b, T, H)) * 0.1, -torch.rand(H) * 15 - 1
    print(f"\nMamba-2 SSD, (B, T, H, P, N) = {(b, T, H, P, N2)}")
    for L in (16, 32, 64, 128, 256):
        ms = bench(lambda *a: ssd_chunked(*a, L), [x, dt2, A2, B2, C2])
        print(f"  chunked SSD, chunk {L:<4}    {ms:8.1f}")
    print(f"  naive loop                {bench(ssd_ref, [x, dt2, A2, B2, C2], 3):8.1f}")

    print("\ncausal depthwise conv (W=4)")
    for shape in [(4, 35, 96), (8, 515, 1024)]:
        xs, w, bias = torch.randn(*shape), torch.randn(shape[2], 4), torch.randn(shape[2])
        conv = lambda xs, w, bias: F.conv1d(xs.transpose(1, 2), w[:, None], bias, groups=xs.shape[2])  # noqa: E731

        def shifted(xs, w, bias):
            T = xs.shape[1] - 3
            return bias + sum(xs[:, k : k + T] * w[:, k] for k in range(4))

        def fused(xs, w, bias):  # the same output length: xs's first 3 rows are the state
            return causal_conv1d(xs[:, 3:], w, bias, xs[:, :3])[0]

        print(
            f"  {str(shape):16} F.conv1d {bench(conv, [xs, w, bias]):7.2f}"
            f"   shifted {bench(shifted, [xs, w, bias]):7.2f}"
            f"   fused {bench(fused, [xs, w, bias]):7.2f}"
        )


if __name__ == "__main__":
    main()
