"""Pick the Triton scan's block sizes on a GPU: a sweep at the bandwidth target's shape.

    python benchmarks/kernels/tune_triton.py [--shape 8 65536 1536] [--full]

Times zoo_kernels.scan.triton's linear-scan forward (fp32) for a grid of
(BLOCK_T, BLOCK_D, num_warps, num_stages), plus two loop variants written
here: `prefetch` loads tile k+1 before scanning tile k, and `range` asks
Triton to software-pipeline the time loop (tl.range num_stages). Every
variant's output is checked against the torch path first. Prints GB/s
(inputs read once, outputs written once) and the % of a device-to-device
copy, measured in the same process. Timings: triton.testing.do_bench medians.
"""

from __future__ import annotations

import argparse
import itertools

import torch
import triton
import triton.language as tl

import zoo_kernels
from zoo_kernels.scan import triton as ts


def copy_gbs(n: int = 2**28) -> float:
    """Device-to-device copy, bytes read + written, GB/s."""
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    return 2 * src.nbytes / ms / 1e6


@triton.jit
def _fwd_variant(
    A,
    X,
    H0,
    H,
    HLAST,
    T,
    D,
    sb,
    st,
    sd,
    BT: tl.constexpr,
    BD: tl.constexpr,
    PREFETCH: tl.constexpr,
    STAGES: tl.constexpr,
):
    """linear scan forward with h0, (B, T, D) contiguous inputs: the package kernel's loop, varied."""
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    rows = tl.arange(0, BT)
    carry = tl.load(H0 + b * D + d, mask=dmask, other=0.0).to(tl.float32)
    base = b * sb + d[None, :] * sd
    if PREFETCH:
        m = (rows < T)[:, None] & dmask[None, :]
        a_n = tl.load(A + base + rows[:, None] * st, mask=m, other=1.0)
        x_n = tl.load(X + base + rows[:, None] * st, mask=m, other=0.0)
    for start in tl.range(0, T, BT, num_stages=STAGES):
        t = start + rows
        m = (t < T)[:, None] & dmask[None, :]
        if PREFETCH:
            a = a_n.to(tl.float32)
            x = x_n.to(tl.float32)
            tn = t + BT
            mn = (tn < T)[:, None] & dmask[None, :]
            a_n = tl.load(A + base + tn[:, None] * st, mask=mn, other=1.0)
            x_n = tl.load(X + base + tn[:, None] * st, mask=mn, other=0.0)
        else:
            a = tl.load(A + base + t[:, None] * st, mask=m, other=1.0).to(tl.float32)
            x = tl.load(X + base + t[:, None] * st, mask=m, other=0.0).to(tl.float32)
        x = tl.where(rows[:, None] == 0, x + a * carry[None, :], x)
        _, h = tl.associative_scan((a, x), 0, ts._lin_combine)
        tl.store(H + base + t[:, None] * st, h, mask=m)
        carry = ts._last_row(h, rows, BT)
    tl.store(HLAST + b * D + d, carry, mask=dmask)


def run_variant(a, x, h0, bt, bd, warps, stages, prefetch):
    bsz, length, dim = x.shape
    h = torch.empty_like(x)
    h_last = torch.empty((bsz, dim), device=x.device)
    _fwd_variant[(bsz, triton.cdiv(dim, bd))](
        a, x, h0, h, h_last, length, dim, *x.stride(), BT=bt, BD=bd, PREFETCH=prefetch, STAGES=stages, num_warps=warps
    )
    return h, h_last


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=[8, 65536, 1536])
    p.add_argument("--full", action="store_true", help="a larger grid (about 4x the time)")
    args = p.parse_args()
    b, t, d = args.shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    a = 0.5 + 0.5 * torch.rand(b, t, d, device="cuda", generator=gen)
    x = torch.rand(b, t, d, device="cuda", generator=gen) - 0.5
    h0 = torch.rand(b, d, device="cuda", generator=gen)
    ref, ref_last = zoo_kernels.linear_scan(a, x, h0, backend="torch")
    moved = a.nbytes + x.nbytes + h0.nbytes + ref.nbytes + ref_last.nbytes
    bw = copy_gbs()
    print(
        f"{torch.cuda.get_device_name()}: copy {bw:.0f} GB/s; shape {tuple(args.shape)}; "
        f"{moved / 1e9:.2f} GB moved per forward",
        flush=True,
    )

    def check(out):
        h, last = out
        err = ((h - ref).abs().max() / ref.abs().max()).item()
        err = max(err, ((last - ref_last).abs().max() / ref_last.abs().max()).item())
        assert err < 1e-4, err
        return err

    results = []

    def time_it(name, fn):
        try:
            err = check(fn())
            ms = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
        except Exception as e:  # a config the compiler rejects (e.g. out of shared memory)
            print(f"{name}: failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}", flush=True)
            return
        gbs = moved / ms / 1e6
        results.append((gbs, name, ms, err))
        print(f"{name}: {ms:.3f} ms  {gbs:.0f} GB/s  {100 * gbs / bw:.1f}% of copy  (err {err:.1e})", flush=True)

    bts = [32, 64, 128, 256] if args.full else [64, 128, 256]
    bds = [8, 16, 32, 64] if args.full else [16, 32, 64]
    warps = [1, 2, 4, 8] if args.full else [4, 8]
    default = (ts.BLOCK_T, ts.BLOCK_D, ts.NUM_WARPS, ts.NUM_STAGES)
    for bt, bd, w in itertools.product(bts, bds, warps):
        if bt * bd // (32 * w) < 1 or bt * bd > 16384:
            continue
        ts.BLOCK_T, ts.BLOCK_D, ts.NUM_WARPS = bt, bd, w
        time_it(f"package BT={bt} BD={bd} warps={w} stages={ts.NUM_STAGES}", lambda: ts.linear_scan_fwd(a, x, h0))
        for prefetch, stages in ((True, 1), (False, 2), (False, 3)):
            label = "prefetch" if prefetch else f"range stages={stages}"
            time_it(f"{label} BT={bt} BD={bd} warps={w}", lambda: run_variant(a, x, h0, bt, bd, w, stages, prefetch))
    ts.BLOCK_T, ts.BLOCK_D, ts.NUM_WARPS, ts.NUM_STAGES = default
    print("\nbest 10:")
    for gbs, name, ms, _err in sorted(results, reverse=True)[:10]:
        print(f"| {name} | {ms:.3f} ms | {gbs:.0f} GB/s | {100 * gbs / bw:.1f}% |")


if __name__ == "__main__":
    main()
