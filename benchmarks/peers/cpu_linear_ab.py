"""parallel.cpu_linear=auto against aten in ONE process, step by step: A, B, A, B, ...

    python benchmarks/peers/cpu_linear_ab.py --models attention mamba2 minlstm --pairs 6

The shape of train_step.py (batch 8 x seq 256, dim 256, 4 layers, fp32, AdamW), one zoo model per
process, its linear route switched between steps (`cpu_linear.set_cpu_linear`), so a slow spell of a
shared machine lands on both routes of a pair; the ratio of each pair, their median and spread are
reported. Answers "is auto at least 0.95x aten" where separate processes minutes apart cannot.
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
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="*", default=["attention", "mamba2", "minlstm"])
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    common.pin_threads(args.threads)
    from zoo_core.cpu_memory import keep_freed_memory

    keep_freed_memory()
    import models
    import torch

    from zoo_core import cpu_linear

    print(common.machine_line())
    print(f"load average before: {common.load()}")
    print("| model | auto / aten, median of pairs | min - max | each pair | routes auto took |")
    print("|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        model, loss_fn, opt, _ = models.build_zoo(name, args.seq)
        tokens = torch.randint(0, models.VOCAB, (args.batch, args.seq + 1))
        x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

        def step(mode: str) -> float:
            cpu_linear.set_cpu_linear(mode, say=False)
            t0 = time.perf_counter()
            loss_fn(model, x, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return time.perf_counter() - t0

        step("auto"), step("aten")  # warm-up: auto measures its shapes here
        ratios = []
        for i in range(args.pairs):
            order = ("auto", "aten") if i % 2 == 0 else ("aten", "auto")  # alternate who goes first
            t = {mode: step(mode) for mode in order}
            ratios.append(t["aten"] / t["auto"])
        routes = ", ".join(f"{k} {v}" for k, v in sorted(cpu_linear.choices().items()))
        print(
            f"| {name} | **{statistics.median(ratios):.2f}x** | {min(ratios):.2f}x - {max(ratios):.2f}x | "
            + " / ".join(f"{r:.2f}" for r in ratios)
            + f" | {routes} |",
            flush=True,
        )
    print(f"load average after: {common.load()}")


if __name__ == "__main__":
    main()
