"""What a zoo_kernels op costs to call: the registered custom op (torch.library's Python
dispatch: autograd wrapper, redispatch, default filling) against zoo_kernels' eager `Op`
(the same implementation and autograd formula called directly, zoo_kernels/_custom_op.py),
forward + backward, at a small shape where the call, not the arithmetic, is the cost
(at a model's shapes the same difference is hidden in the noise of milliseconds of work).
Interleaved rounds, medians.

    python benchmarks/kernels/op_overhead.py [--out benchmarks/results/op-overhead-<machine>.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from zoo_kernels.glu import _glu_op
from zoo_kernels.norm import _norm_op

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "peers"))
import common  # noqa: E402  (benchmarks/peers/common.py: the machine line every result carries)


def cases(rows: int, dim: int) -> dict[str, tuple]:
    torch.manual_seed(0)
    x, w = torch.randn(rows, dim, requires_grad=True), torch.randn(dim, requires_grad=True)
    h = torch.randn(rows, 2 * dim, requires_grad=True)
    return {"rms_norm": (_norm_op, (x, w, 1e-5, torch.float32)), "glu": (_glu_op, (h, "silu"))}


def fwd_bwd(call, args, grads: dict) -> None:
    out = call(*args)
    out = out[0] if isinstance(out, tuple) else out
    key = (tuple(out.shape), out.dtype)
    if key not in grads:  # a dense output gradient, as a layer gets in training (not sum()'s expanded one)
        grads[key] = torch.randn(out.shape, dtype=out.dtype)
    out.backward(grads[key])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    common.pin_threads(args.threads)
    shapes = {"4 x 64": (4, 64)}
    runs = {}
    for label, (rows, dim) in shapes.items():
        for name, (op, op_args) in cases(rows, dim).items():
            runs[(label, name, "custom op")] = (op.op, op_args)
            runs[(label, name, "zoo_kernels Op")] = (op, op_args)
    times, grads = {k: [] for k in runs}, {}
    for _ in range(args.rounds):
        for k, (call, op_args) in runs.items():
            t0 = time.perf_counter()
            fwd_bwd(call, op_args, grads)
            times[k].append(time.perf_counter() - t0)
    lines = [
        "# Calling a zoo_kernels op: torch.library's custom op against zoo_kernels' eager Op",
        "",
        f"Command: `python benchmarks/kernels/op_overhead.py --rounds {args.rounds}`",
        "",
        common.machine_line(),
        "",
        "Forward + backward (a dense random output gradient), median microseconds over interleaved rounds:",
        "",
        "| shape | op | custom op | Op | saved |",
        "|---|---|---|---|---|",
    ]
    for label in shapes:
        for name in ("rms_norm", "glu"):
            a = 1e6 * statistics.median(times[(label, name, "custom op")])
            b = 1e6 * statistics.median(times[(label, name, "zoo_kernels Op")])
            lines.append(f"| {label} | {name} | {a:.1f} | {b:.1f} | {a - b:.1f} |")
    common.print_lines(lines, args.out)


if __name__ == "__main__":
    main()
