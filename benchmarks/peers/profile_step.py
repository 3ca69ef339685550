"""Where a training step's time goes: torch.profiler over a few steps of one model.

python benchmarks/peers/profile_step.py mamba2            # zoo's model
python benchmarks/peers/profile_step.py mamba2 --peer     # the peer's
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
    model, loss_fn, opt, note = builders[args.row](args.seq) if args.peer else models.build_zoo(mixer, args.seq)
    tokens = torch.randint(0, models.VOCAB, (args.batch, args.seq + 1))
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        loss_fn(model, inputs, targets).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(note)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
