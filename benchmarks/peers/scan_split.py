"""Where zoo's CPU scan spends its time against the copy floor of scan.py, piece by piece.

    python benchmarks/peers/scan_split.py                  # T = 1K and 4K, glibc's allocator as it is
    python benchmarks/peers/scan_split.py --keep-freed     # freed memory kept (what `zoo train` does)

scan.py compares the whole op with ops that move the same bytes. This splits both sides at
(batch 8, channels 256, T), fp32, in interleaved rounds (every piece once per round, medians):

- the copy floor as scan.py times it (fresh outputs) and the same ops into buffers made once;
- the compiled kernel alone (zoo_kernels/scan/cpu.py) into a buffer made once: forward, and the
  backward's reverse scan;
- the backward's second pass (da_t = dx_t h_(t-1)) into a buffer made once;
- the whole op: forward (no autograd), the backward's function (chunk.linear_scan_bwd: both
  passes and their allocations), and forward + backward through autograd as scan.py times it.

The kernel against the floor at equal allocation is the scan's own cost; the rest is what the op
adds around it (allocation, dispatch, autograd, the second pass).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="*", default=[1024, 4096])
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep-freed", action="store_true", help="keep freed memory for reuse (zoo_core.cpu_memory)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    common.pin_threads(args.threads)
    if args.keep_freed:
        from zoo_core.cpu_memory import keep_freed_memory

        keep_freed_memory()
    import torch

    import zoo_kernels
    from zoo_kernels.scan import chunk, cpu

    B, D = 8, 256
    lines = [
        "# zoo's CPU scan against the copy floor, piece by piece",
        "",
        f"Command: `{common.command_line()}`",
        "",
        common.machine_line(),
        f"Freed memory: {'kept for reuse (zoo_core.cpu_memory)' if args.keep_freed else 'glibc default'}. "
        f"{args.rounds} interleaved rounds, median ms; load average before: {common.load()}.",
        "",
    ]
    for T in args.lengths:
        gen = torch.Generator().manual_seed(T)
        a = torch.rand(B, T, D, generator=gen) * 0.5 + 0.5
        x, g = torch.rand(B, T, D, generator=gen), torch.randn(B, T, D, generator=gen)
        h = zoo_kernels.linear_scan(a, x)[0]
        g_last = torch.zeros(B, D)
        buf, buf2 = torch.empty(B, T, D), torch.empty(B, T, D)

        def autograd_fb():
            leaves = [a.detach().requires_grad_(), x.detach().requires_grad_()]
            zoo_kernels.linear_scan(*leaves)[0].backward(g)

        pieces = {
            "floor forward, fresh output (scan.py's floor)": lambda: torch.add(a, x),
            "floor forward into a buffer": lambda: torch.add(a, x, out=buf),
            "kernel forward into a buffer": lambda: cpu.linear_scan_into(a, x, None, buf),
            "zoo forward (linear_scan, no autograd)": lambda: zoo_kernels.linear_scan(a, x),
            "floor backward, fresh outputs (scan.py's floor)": lambda: (torch.mul(g, h), torch.add(g, a)),
            "floor backward into buffers": lambda: (torch.mul(g, h, out=buf), torch.add(g, a, out=buf2)),
            "kernel reverse scan into a buffer": lambda: cpu.linear_scan_into(
                a[:, 1:], g[:, :-1], g[:, -1], buf[:, :-1], reverse=True
            ),
            "second pass da = dx h_(t-1) into a buffer": lambda: torch.mul(buf[:, 1:], h[:, :-1], out=buf2[:, 1:]),
            "zoo backward (linear_scan_bwd)": lambda: chunk.linear_scan_bwd(a, h, None, g, g_last),
            "zoo forward + backward through autograd (scan.py's)": autograd_fb,
        }
        times = {k: [] for k in pieces}
        for fn in pieces.values():
            fn()
        for _ in range(args.rounds):
            for k, fn in pieces.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        mb = B * T * D * 4 / 2**20
        lines += [f"## T = {T} (each (B, T, D) tensor {mb:.0f} MiB)", "", "| piece | ms |", "|---|---|"]
        lines += [f"| {k} | {1e3 * statistics.median(v):.3f} |" for k, v in times.items()]
        lines.append("")
    common.print_lines(lines, args.out)


if __name__ == "__main__":
    main()
