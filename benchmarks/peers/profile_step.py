"""Where a training step's time goes: torch.profiler over a few steps of one model.

python benchmarks/peers/profile_step.py mamba2            # zoo's model
python benchmarks/peers/profile_step.py mamba2 --peer     # the peer's
python benchmarks/peers/profile_step.py attention --bf16  # zoo with parallel.mixed_precision=bf16 (CPU autocast)
ONEDNN_VERBOSE=1 python benchmarks/peers/profile_step.py attention --bf16 --steps 1 | grep -m5 exec
                                                          # which oneDNN kernels (and ISA) the matmuls reach
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("row")
    p.add_argument("--peer", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--bf16", action="store_true", help="zoo: parallel.mixed_precision=bf16, steps under CPU autocast")
    p.add_argument("--cpu-linear", default="auto", choices=["auto", "onednn", "aten"], help="zoo: parallel.cpu_linear")
    args = p.parse_args()
    common.pin_threads(args.threads)
    from zoo_core.cpu_memory import keep_freed_memory

    keep_freed_memory()  # as train_step.py does for every model
    import models
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    builders = {row: fn for row, _, _, fn in models.ROWS}
    mixer = {row: m for row, m, _, _ in models.ROWS}[args.row]
    extra = [f"parallel.cpu_linear={args.cpu_linear}"] + (["parallel.mixed_precision=bf16"] if args.bf16 else [])
    if args.peer:
        model, loss_fn, opt, note = builders[args.row](args.seq)
    else:
        model, loss_fn, opt, note = models.build_zoo(mixer, args.seq, extra=extra)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    tokens = torch.randint(0, models.VOCAB, (args.batch, args.seq + 1))
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        with autocast:  # what zoo train does under parallel.mixed_precision=bf16: the loss's backward outside
            loss = loss_fn(model, inputs, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(note)
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    matmul, total = common.matmul_split(averages)
    print(
        f"matmul ops (linear, mm, bmm, attention kernels): {100 * matmul / max(total, 1):.0f}% of self CPU time "
        f"({matmul / 1e3 / args.steps:.1f} of {total / 1e3 / args.steps:.1f} ms per step)"
    )


if __name__ == "__main__":
    main()
