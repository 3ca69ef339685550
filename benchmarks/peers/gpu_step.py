"""Training-step throughput on one GPU: zoo's models against the peers at about 125M parameters.

    python benchmarks/peers/gpu_step.py                     # every row; writes benchmarks/results/
    python benchmarks/peers/gpu_step.py --rows attention mingru --no-write
    python benchmarks/peers/gpu_step.py --shape 1b --rows attention --zoo-modes eager compiled

Shape `models.GPU_125M`: dim 768, 12 layers (Mamba-1/2: 24 mixers, no MLPs), vocab 50304; seq 2048,
batch 8. `--shape 1b` (`models.GPU_1B`, dim 2048, 18 layers: about 1.0B parameters for attention) is
for attention's MFU; its results go to a file of their own (`...-1b.md`). bf16 autocast over fp32
weights for every model (zoo's parallel.mixed_precision=bf16), AdamW,
forward + backward + step on random tokens; warm-up steps, then the median of timed steps, each
closed by a CUDA synchronize. One fresh subprocess per model, so its peak memory
(torch.cuda.max_memory_allocated) is its own; a model that runs out of memory is retried at half
the batch. MFU = tokens/s x training FLOPs per token / the device's dense bf16 peak, with zoo's own
count of the matched model (3 x forward, `model.flops_per_token`) for both sides of a row.
The peers take their CUDA fast paths (flash-attn, mamba-ssm, causal-conv1d) where those import.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

ALIASES = {"mambapy": "mamba (HF use_mambapy)"}  # a row name without spaces, for shell loops
SLOW_S = 15.0  # a first step longer than this: 1 more warm-up step and 3 timed steps
VERY_SLOW_S = 45.0  # longer than this (HF's Python loops over time): no more warm-up, 2 timed steps


def _fast_paths() -> dict:
    found = {}
    for lib in ("flash_attn", "mamba_ssm", "causal_conv1d"):
        try:
            __import__(lib)
            found[lib] = True
        except Exception:  # ImportError, or an ABI-broken build
            found[lib] = False
    return found


def worker(args) -> None:
    """One model in this process; prints one JSON line."""
    import models
    import torch

    dev = "cpu" if args.smoke else "cuda"
    shape = models.CPU if args.smoke else models.GPU_SHAPES[args.shape]
    sync = (lambda: None) if args.smoke else torch.cuda.synchronize
    torch.manual_seed(0)
    rows = {row: (mixer, fn) for row, mixer, _, fn in models.ROWS}
    mixer, peer_builder = rows[args.row]
    T, B = args.seq, args.batch
    tokens = torch.randint(0, shape.vocab, (B, T + 1), device=dev)
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.side == "zoo":
            extra = ["parallel.mixed_precision=bf16"]  # build_zoo applies compile itself
            model, loss_fn, opt, note = models.build_zoo(
                mixer, T, compile=args.compile, shape=shape, device=dev, extra=extra
            )
        else:
            model, loss_fn, opt, note = peer_builder(T, shape=shape, device=dev)
        if not args.smoke:
            torch.cuda.reset_peak_memory_stats()

        def step():
            with torch.autocast(dev, dtype=torch.bfloat16):
                loss = loss_fn(model, inputs, targets)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()

        try:
            t0 = time.perf_counter()
            step()  # first step (compilation, autotuning, lazy init) reported separately
            first_s = time.perf_counter() - t0
            warmup, repeats = max(args.warmup - 1, 0), args.repeats
            least = 3
            if first_s > SLOW_S:
                warmup, repeats = min(warmup, 1), 3
            if first_s > VERY_SLOW_S:  # keeps one such model inside a device call's 10 minutes
                warmup, repeats, least = 0, 2, 2
            times = common.time_steps(step, warmup, repeats, args.budget, min_repeats=least)
        except torch.cuda.OutOfMemoryError:
            print(json.dumps({"row": args.row, "side": args.side, "oom": True, "batch": B}))
            return
    said = sorted(
        {
            str(w.message).splitlines()[0][:160]
            for w in caught
            if "not installed" in str(w.message) or "fall" in str(w.message).lower()
        }
    )
    med = common.median(times)
    out = {
        "row": args.row,
        "side": args.side,
        "note": note,
        "batch": B,
        "git": common.git_rev(),
        "params": sum(p.numel() for p in model.parameters()),
        "step_s": med,
        "tokens_per_s": B * T / med,
        "steps": len(times),
        "spread": common.spread(times),
        "first_step_s": first_s,
        "peak_gb": 0.0 if args.smoke else torch.cuda.max_memory_allocated() / 1e9,
        "fallbacks": said,
    }
    if args.side == "zoo":
        out["train_flops_per_token"] = 3.0 * model.flops_per_token(T)
    print(json.dumps(out))


def run_one(row: str, side: str, args) -> dict:
    batch = args.batch
    while True:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "--row",
            row,
            "--side",
            side,
            "--warmup",
            str(args.warmup),
            "--repeats",
            str(args.repeats),
            "--budget",
            str(args.budget),
            "--seq",
            str(args.seq),
            "--batch",
            str(batch),
            "--shape",
            args.shape,
        ] + (["--compile"] if args.compile else [])
        cmd += ["--smoke"] if args.smoke else []
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"row": row, "side": side, "error": f"over the {args.timeout:.0f} s limit"}
        result = next((json.loads(ln) for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
        if result and result.get("oom") and batch > 1:
            batch //= 2
            continue
        if result and not result.get("oom"):
            return result
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        errs = [ln for ln in lines if "Error" in ln or "error" in ln] or lines or ["out of memory at batch 1"]
        return {"row": row, "side": side, "error": f"exit {proc.returncode}: {errs[-1].strip()[:200]}"}


def _tps(r: dict) -> str:
    return "n/a (" + r["error"] + ")" if "error" in r else f"{r['tokens_per_s']:,.0f}"


def _mfu(r: dict, flops: float, peak: float) -> str:
    return "n/a" if "error" in r or not flops or not peak else f"{100 * r['tokens_per_s'] * flops / peak:.1f}%"


def main() -> None:
    import models

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", default=[r for r, *_ in models.ROWS])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--budget", type=float, default=20.0, help="stop timing a model after this many seconds")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--shape",
        default="125m",
        choices=sorted(models.GPU_SHAPES),
        help="model size (models.GPU_SHAPES); 1b is sized for the attention row",
    )
    p.add_argument("--zoo-modes", nargs="*", default=["eager"], choices=["eager", "compiled"])
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-write", action="store_true")
    p.add_argument(
        "--append",
        action="store_true",
        help="keep the rows of an earlier run's JSON that this run does not measure, and report them all",
    )
    p.add_argument(
        "--smoke", action="store_true", help="check the script on CPU at the tiny CPU shape (nothing is written)"
    )
    common.add_worker_args(p)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    args.rows = [ALIASES.get(r, r) for r in args.rows]

    import torch

    from zoo_core.throughput import device_peak

    if args.smoke:
        args.no_write, args.seq, args.repeats, args.warmup = True, 64, 2, 1
    device = "cpu (smoke test)" if args.smoke else torch.cuda.get_device_name()
    peak = None if args.smoke else device_peak(torch.device("cuda"))
    mixer_of = {row: mixer for row, mixer, _, _ in models.ROWS}
    peer_of = {row: peer for row, _, peer, _ in models.ROWS}
    slug = "gpu-" + "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-")
    size = "" if args.shape == "125m" else f"-{args.shape}"
    out = args.out or common.RESULTS / f"peers-train-{slug}{size}.md"
    raw = out.with_suffix(".json")
    zoo, peers = {}, {}
    if args.append and raw.exists():  # rows measured by an earlier call (a device call is limited in time)
        old = json.loads(raw.read_text())
        zoo = {tuple(k.rsplit(" ", 1)): r for k, r in old["zoo"].items()}
        peers = old["peer"]
    fresh = set()
    for row in args.rows:
        for mode in args.zoo_modes:
            if (mixer_of[row], mode) not in fresh:
                fresh.add((mixer_of[row], mode))
                args.compile = mode == "compiled"
                zoo[mixer_of[row], mode] = run_one(mixer_of[row], "zoo", args)
        args.compile = False
        peers[row] = run_one(row, "peer", args)
        print(
            f"{row:24s} {peer_of[row]:40s} {_tps(peers[row]):>10s} tok/s | "
            + "  ".join(f"zoo {md} {_tps(zoo[mixer_of[row], md])}" for md in args.zoo_modes),
            flush=True,
        )
        peers = {r: peers[r] for r, *_ in models.ROWS if r in peers}  # the table's order
        text = report(args, device, peak, zoo, peers)
        if not args.no_write:  # after every row: a call cut off at its time limit keeps what it measured
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            raw.write_text(
                json.dumps({"zoo": {f"{m} {md}": r for (m, md), r in zoo.items()}, "peer": peers}, indent=1) + "\n"
            )
    print(text)
    if not args.no_write:
        print(f"wrote {out}")


def report(args, device, peak, zoo, peers) -> str:
    import models
    import torch

    mixer_of = {row: mixer for row, mixer, _, _ in models.ROWS}
    peer_of = {row: peer for row, _, peer, _ in models.ROWS}
    modes = args.zoo_modes
    found = _fast_paths()
    lines = [
        f"# Training step on a GPU: zoo against the peers ({device})",
        "",
        f"Device: {device}, torch {torch.__version__}, CUDA {torch.version.cuda}; zoo at git "
        f"{', '.join(sorted({r['git'] for r in [*zoo.values(), *peers.values()] if 'git' in r}) or common.git_rev())}; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}. MFU against {peak / 1e12:.0f} TFLOP/s dense bf16 (datasheet)."
        if peak
        else f"Device: {device}; no datasheet peak known, so no MFU.",
        "CUDA fast paths importable here: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in found.items()) + ".",
        "",
        f"Command: `python benchmarks/peers/gpu_step.py{'' if args.shape == '125m' else ' --shape ' + args.shape}`"
        f" (shape `models.GPU_SHAPES[{args.shape!r}]`). Seq {args.seq}, batch {args.batch} (halved where a model "
        "ran out of memory: see the batch column), bf16 autocast over fp32 weights for every model, AdamW, "
        f"forward + backward + optimizer step on random tokens; {args.warmup} warm-up steps, then the median of "
        f"up to {args.repeats} timed steps (fewer once they pass {args.budget:.0f} s; a first step over "
        f"{SLOW_S:.0f} s gets 1 warm-up step and 3 timed ones, one over {VERY_SLOW_S:.0f} s no more warm-up and 2 "
        f"timed ones). One fresh subprocess per model. MFU uses zoo's "
        "own FLOPs count of the matched model (3 x forward) for both sides, so the MFU ratio is the tokens/s ratio.",
        "",
        "| model | peer | peer tok/s | peer MFU | "
        + " | ".join(f"zoo {md} tok/s | zoo {md} MFU" for md in modes)
        + " | "
        + " | ".join(f"zoo {md} / peer" for md in modes)
        + " |",
        "|---|---|---|---|" + "---|---|" * len(modes) + "---|" * len(modes),
    ]
    for row, p in peers.items():
        zs = {md: zoo[mixer_of[row], md] for md in modes}
        flops = next((z.get("train_flops_per_token") for z in zs.values() if "error" not in z), None)
        cells = [row, peer_of[row], _tps(p), _mfu(p, flops, peak)]
        for md in modes:
            cells += [_tps(zs[md]), _mfu(zs[md], flops, peak)]
        cells += [
            "n/a" if "error" in zs[md] or "error" in p else f"**{zs[md]['tokens_per_s'] / p['tokens_per_s']:.2f}x**"
            for md in modes
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Batch, memory, spread, parameters",
        "",
        "| model | side | batch | peak GB | n, spread | first step s | params | fallbacks said |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, p in peers.items():
        for side, r in [*((f"zoo {md}", zoo[mixer_of[row], md]) for md in modes), ("peer", p)]:
            if "error" in r:
                lines.append(f"| {row} | {side} | | | | | | {r['error']} |")
                continue
            lines.append(
                f"| {row} | {side} | {r['batch']} | {r['peak_gb']:.1f} | {r['steps']}, {r['spread']} | "
                f"{r['first_step_s']:.1f} | {r['params']:,} | {'; '.join(r['fallbacks']) or '-'} |"
            )
    lines += ["", "## Shapes and builds", ""]
    shape = models.GPU_SHAPES[args.shape]
    lines += [f"- **{k}**: {v}" for k, v in models.shape_notes(shape).items()]
    lines += [f"- {models.peer_lm_note(shape)}", ""]
    for row, p in peers.items():
        lines.append(
            f"- {row}: "
            + " | ".join(zoo[mixer_of[row], md].get("note", "") for md in modes)
            + f" | {p.get('note', p.get('error'))}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
