"""Peak memory of one training micro-step with n = 1, 2, 4, 8 multi-token heads,
with and without the sequential per-head backward (Gloeckle et al. 2024, section 3.1).

    .venv/bin/python benchmarks/mtp/peak_memory.py [--vocab 32768 --dim 256 --batch 4 --seq 256]

Each configuration runs in a fresh process and does exactly what
`Trainer.train_step` does for one micro-batch (model forward with
`backward_scale`, then the trunk backward), after one warm-up step so that
parameter gradients already exist. Two measurements, in MiB:

* `rss`: the step's resident-memory high-water mark above the resident memory
  just before it (Linux: VmHWM reset through /proc/self/clear_refs, then read
  from /proc/self/status). MALLOC_MMAP_THRESHOLD_ is pinned so that glibc
  returns large freed blocks at once and RSS follows the live tensors.
* `tensors`: the peak of live tensor bytes seen by PyTorch's MemTracker
  (a dispatch mode counting every storage: parameters, gradients, activations,
  temporaries), independent of the allocator.

The vocabulary is large so that the (batch x time x vocab) logits dominate,
as they do in the paper's setting. Step times are printed but left out of the
table: on a shared CPU they measure the neighbours more than the trick.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def child(args) -> dict:
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    from zoo_core.config import load_config, resolve
    from zoo_core.model import build_model
    from zoo_core.registry import get_registry

    torch.set_num_threads(args.threads)
    registry = get_registry()
    cfg = resolve(
        load_config(
            None,
            [
                f"model.dim={args.dim}",
                f"model.n_layers={args.layers}",
                f"model.vocab_size={args.vocab}",
                "model.mixer.name=attention",
                "model.loss.name=mtp",
                f"model.loss.n_heads={args.n}",
                f"model.loss.form={args.form}",
                f"model.loss.sequential_backward={args.trick}",
            ],
        ),
        registry,
    )
    model = build_model(cfg, registry, args.vocab).train()
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    targets = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)

    def step():  # Trainer.train_step for one micro-batch
        out, _ = model(inputs, targets, backward_scale=1.0)
        if out.trunk_grad is not None:
            h, grad = out.trunk_grad
            h.backward(grad)
        else:
            out.loss.backward()
        return out

    step()  # warm-up: parameter gradients now exist, as in every step after the first
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak-RSS counter
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    rss_step = (_status_kib("VmHWM") - before) / 1024

    tracker = MemTracker()
    tracker.track_external(model, inputs, targets)
    with tracker:
        step()
    tensors = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"] / 2**20
    params = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    return {
        "n": args.n,
        "trick": args.trick,
        "rss_step_mib": rss_step,
        "tensor_peak_mib": tensors,
        "params_mib": params,
        "step_s": seconds,
    }


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--form", default="independent")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--heads", default="1,2,4,8")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--trick", default="true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(args.threads)}
    base = [
        sys.executable,
        __file__,
        "--child",
        f"--vocab={args.vocab}",
        f"--dim={args.dim}",
        f"--layers={args.layers}",
        f"--batch={args.batch}",
        f"--seq={args.seq}",
        f"--form={args.form}",
        f"--threads={args.threads}",
    ]
    rows = []
    for n in [int(x) for x in args.heads.split(",")]:
        for trick in ("false", "true"):
            out = subprocess.run(base + [f"--n={n}", f"--trick={trick}"], env=env, capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"n={n} sequential={trick}: step RSS +{r['rss_step_mib']:.0f} MiB, "
                f"tensor peak {r['tensor_peak_mib']:.0f} MiB, params {r['params_mib']:.0f} MiB, "
                f"{r['step_s']:.2f} s",
                flush=True,
            )
    table = _markdown(rows, args)
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table)


def _markdown(rows, args) -> str:
    logits_mib = args.batch * args.seq * args.vocab * 4 / 2**20
    lines = [
        f"Shape: dim {args.dim}, {args.layers} attention layers, vocab {args.vocab}, batch {args.batch} x "
        f"seq {args.seq} (one head's fp32 logits = {logits_mib:.0f} MiB), form `{args.form}`, fp32, "
        f"{args.threads} thread(s). Machine: {platform.machine()} {platform.processor() or ''} "
        f"{os.cpu_count()} cores, Linux {platform.release()}, torch CPU.",
        "",
        "| n heads | params MiB | step RSS MiB, one graph | step RSS MiB, sequential | "
        "tensor peak MiB, one graph | tensor peak MiB, sequential |",
        "|---|---|---|---|---|---|",
    ]
    by = {(r["n"], r["trick"]): r for r in rows}
    for n in sorted({r["n"] for r in rows}):
        a, b = by[(n, "false")], by[(n, "true")]
        lines.append(
            f"| {n} | {a['params_mib']:.0f} | {a['rss_step_mib']:.0f} | {b['rss_step_mib']:.0f} | "
            f"{a['tensor_peak_mib']:.0f} | {b['tensor_peak_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
