"""The training step's matmuls: torch's F.linear against zoo's oneDNN route (parallel.cpu_linear).

    python benchmarks/peers/linear.py              # writes benchmarks/results/peers-linear-<machine>.md
    python benchmarks/peers/linear.py --no-write

For each linear layer shape of the peer benchmark (2048 tokens = batch 8 x seq
256, fp32), times the three products a training step makes: forward y = x W^T,
input gradient g W and weight gradient g^T x. "torch" is F.linear and autograd's
own products (BLAS sgemm: MKL in PyTorch's x86 wheels); "zoo" is
`zoo_core.cpu_linear`'s oneDNN calls; "bf16" is the same product in bfloat16
through torch.mm, what `parallel.mixed_precision=bf16` (CPU autocast) runs
(oneDNN's bf16 kernels: AMX or AVX512-BF16 where the CPU has them). The three
are timed in interleaved rounds (median of each), threads pinned. Also records
which BLAS the wheel uses and the max relative difference of the fp32 two
against float64.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

#: (name, in features, out features) of the layers in benchmarks/peers/models.py at dim 256.
SHAPES = [
    ("attention wq, wo; head", 256, 256),
    ("attention wkv", 256, 512),
    ("SwiGLU w_in", 256, 1408),
    ("SwiGLU w_out", 704, 256),
    ("mamba2 in_proj", 256, 1160),
    ("mamba2 out_proj", 512, 256),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    common.pin_threads(args.threads)
    import torch

    from zoo_core import cpu_linear
    from zoo_core.cpu_tune import paired_medians

    why_not = cpu_linear.set_cpu_linear("onednn")
    if why_not:
        sys.exit(f"oneDNN linear unavailable here: {why_not}")
    mm = cpu_linear._mm
    load_before = common.load()
    rows, M = [], args.tokens
    for name, k, n in SHAPES:
        torch.manual_seed(0)
        x, w, g = torch.randn(M, k), torch.randn(n, k), torch.randn(M, n)
        xb, wb, gb = x.bfloat16(), w.bfloat16(), g.bfloat16()
        pairs = {
            "forward": (lambda: x @ w.t(), lambda: mm(x, w), lambda: xb @ wb.t()),
            "input grad": (lambda: g @ w, lambda: mm(g, w.t()), lambda: gb @ wb),
            "weight grad": (lambda: g.t() @ x, lambda: mm(x.t(), g.t()).t(), lambda: gb.t() @ xb),
        }
        for product, (ours_torch, ours_zoo, bf16) in pairs.items():
            fns = {"torch": ours_torch, "zoo": ours_zoo, "bf16": bf16}
            if product == "weight grad":  # both oneDNN forms; cpu_linear=auto measures them and takes the faster
                fns["zoo_gt"] = lambda: mm(g.t(), x.t())
            t = paired_medians(fns, rounds=args.repeats, budget_s=10.0)
            t_torch, t_zoo, t_bf16 = t["torch"], min(t["zoo"], t.get("zoo_gt", t["zoo"])), t["bf16"]
            ref = {
                "forward": x.double() @ w.double().t(),
                "input grad": g.double() @ w.double(),
                "weight grad": g.double().t() @ x.double(),
            }[product]
            err = max(float((f().double() - ref).norm() / ref.norm()) for f in (ours_torch, ours_zoo))
            gflop = 2 * M * k * n / 1e9
            best32 = min(t_torch, t_zoo)
            speeds = (gflop / t_torch, gflop / t_zoo, t_torch / t_zoo, gflop / t_bf16, best32 / t_bf16)
            rows.append((name, f"{k}->{n}", product, *speeds, err))
            print(
                f"{name:24s} {k}->{n:<5d} {product:12s} torch {gflop / t_torch:6.0f}  zoo {gflop / t_zoo:6.0f} "
                f"bf16 {gflop / t_bf16:6.0f} GFLOP/s  zoo/torch {speeds[2]:.2f}x  bf16/fp32 {speeds[4]:.2f}x",
                flush=True,
            )
    text = report(rows, args, load_before, common.load(), torch)
    print(text)
    if not args.no_write:
        common.write_report(text, args.out, "linear")


def report(rows, args, load_before, load_after, torch) -> str:
    blas = "MKL" if torch.backends.mkl.is_available() else "the wheel's BLAS"
    lines = [
        f"# Linear layers: torch's {blas} sgemm against zoo's oneDNN route ({common.machine_slug()})",
        "",
        common.machine_line(),
        f"Threads pinned: {args.threads}. Load average before: {load_before}; after: {load_after}.",
        "",
        f"Command: `{common.command_line()}`. {args.tokens} tokens (batch 8 x seq 256), fp32; "
        "median of each in interleaved rounds. 'torch' is F.linear and autograd's products; 'zoo' is "
        "`zoo_core.cpu_linear`'s oneDNN route (what parallel.cpu_linear=auto takes where it measured faster); "
        "'bf16' is the product in bfloat16 (torch.mm, what CPU autocast runs); bf16 / fp32 is against the "
        "faster fp32 route.",
        "",
        "| layer | in->out | product | torch GFLOP/s | zoo GFLOP/s | zoo / torch | bf16 GFLOP/s | bf16 / fp32 "
        "| max rel. error vs fp64 (fp32) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {s} | {p} | {a:.0f} | {b:.0f} | **{r:.2f}x** | {c:.0f} | **{q:.2f}x** | {e:.1e} |"
        for n, s, p, a, b, r, c, q, e in rows
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
