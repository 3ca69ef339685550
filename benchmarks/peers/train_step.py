"""Training-step throughput: zoo's models against the peers at one shape.

    python benchmarks/peers/train_step.py                  # every row, writes benchmarks/results/
    python benchmarks/peers/train_step.py --rows mamba2 mingru --no-write

Batch 8, seq 256, hidden 256, 4 layers, vocab 256; fp32; AdamW; each step is
forward + backward + optimizer step on random tokens. Warm-up steps first, then
the median of the timed steps, in --rounds rounds (zoo and peer back to back
in each; the median round is reported). Every model runs in a fresh subprocess with
torch threads pinned, so its peak memory (growth of the process's resident
high-water mark from just before the model is built) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

#: A model whose first step takes longer than this gets 1 more warm-up step and 3 timed steps.
SLOW_S = 15.0


def worker(args) -> None:
    """One model in this process; prints one JSON line."""
    common.pin_threads(args.threads)
    freed = "glibc default"
    if not args.glibc_default:  # both sides alike: what `zoo train` does on CPU, applied to the peers too
        from zoo_core.cpu_memory import keep_freed_memory

        freed = "kept for reuse" if not keep_freed_memory() else "glibc default"
    import models
    import torch

    builders = {row: fn for row, _, _, fn in models.ROWS}
    mixers = {row: mixer for row, mixer, _, _ in models.ROWS}
    torch.manual_seed(0)
    if args.side == "zoo":
        import zoo_core.registry  # noqa: F401  (imports before the memory baseline)
    else:
        import minGRU_pytorch  # noqa: F401
        import transformers  # noqa: F401
    T, B = args.seq, args.batch
    tokens = torch.randint(0, models.VOCAB, (B, T + 1))
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    base = common.max_rss_mb()
    t_build = time.perf_counter()
    if args.side == "zoo":
        extra = [f"parallel.cpu_linear={args.cpu_linear}"] + (["parallel.mixed_precision=bf16"] if args.bf16 else [])
        model, loss_fn, opt, note = models.build_zoo(mixers[args.row], T, compile=args.compile, extra=extra)
        if args.bf16:  # what zoo train does on one process: autocast over the fp32 weights
            from zoo_core.parallelize import warn_cpu_bf16

            warn_cpu_bf16()
            fp32_loss = loss_fn

            def loss_fn(m, x, y):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return fp32_loss(m, x, y)
    else:
        model, loss_fn, opt, note = builders[args.row](T)
    build_s = time.perf_counter() - t_build

    def step():
        loss = loss_fn(model, inputs, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()  # first step (compilation, lazy init) reported separately
    first_s = time.perf_counter() - t0
    warmup, repeats = max(args.warmup - 1, 0), args.repeats
    if first_s > SLOW_S:  # HF's sequential Mamba path: one warm step is enough, and 3 timed ones
        warmup, repeats = min(warmup, 1), 3
    times = common.time_steps(step, warmup, repeats, args.budget)
    med = common.median(times)
    routes, mfu = {}, {}
    if args.side == "zoo":
        from zoo_core import cpu_linear

        routes = {"mode": args.cpu_linear, "shapes": cpu_linear.choices()}
        mfu = _mfu(model, T, B / med * T, torch.bfloat16 if args.bf16 else torch.float32)
    print(
        json.dumps(
            {
                "row": args.row,
                "side": args.side,
                "note": note,
                "params": sum(p.numel() for p in model.parameters()),
                "step_s": med,
                "tokens_per_s": B * T / med,
                "steps": len(times),
                "spread": common.spread(times),
                "first_step_s": first_s,
                "build_s": build_s,
                "peak_mb": common.max_rss_mb() - base,
                "threads": torch.get_num_threads(),
                "freed_memory": freed,
                "cpu_linear": routes,
                "param_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()}),
                **mfu,
            }
        )
    )


def _mfu(model, seq_len: int, tokens_per_s: float, dtype) -> dict:
    """Model FLOP/s against this CPU's GEMM peak in `dtype`, the peak measured in this process right
    after the timed steps (zoo_core/loop/cpu/peak.py's calibration, not its cache): a slow spell of a
    shared machine lands on both, as in the interleaved rounds."""
    from zoo_core.loop.cpu.peak import calibrate

    flops = 3.0 * model.flops_per_token(seq_len)  # training = 3 x forward, the mixers' own counts
    peak = calibrate(dtype)
    return {
        "train_flops_per_token": flops,
        "gemm_peak": peak,
        "mfu": flops * tokens_per_s / peak["flops"],
    }


def run_one(row: str, side: str, args) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--row",
        row,
        "--side",
        side,
        "--threads",
        str(args.threads),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
        "--budget",
        str(args.budget),
        "--seq",
        str(args.seq),
        "--batch",
        str(args.batch),
    ]
    if args.compile and side == "zoo":
        cmd.append("--compile")
    if side == "zoo":
        cmd += ["--cpu-linear", args.cpu_linear] + (["--bf16"] if args.bf16 else [])
    if args.glibc_default:
        cmd.append("--glibc-default")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    # the last line that looks like an error, not a warning the library printed on the way
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    errs = [ln for ln in lines if "Error" in ln or "error" in ln] or lines or ["no output"]
    return {"row": row, "side": side, "error": f"exit {proc.returncode}: {errs[-1].strip()[:200]}"}


def fmt_tps(r: dict) -> str:
    return "n/a (" + r["error"] + ")" if "error" in r else f"{r['tokens_per_s']:,.0f}"


def fmt_mb(r: dict) -> str:
    return "n/a" if "error" in r else f"{r['peak_mb']:,.0f}"


def main() -> None:
    import models

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--rows",
        nargs="*",
        default=[r for r, *_ in models.ROWS],
        help="rows to run (default: all): " + ", ".join(r for r, *_ in models.ROWS),
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="stop timing a model after this many seconds "
        "(at least 3 timed steps): HF's sequential Mamba path is far slower than the others",
    )
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--zoo-modes",
        nargs="*",
        default=["eager", "compiled"],
        choices=["eager", "compiled", "aten", "bf16"],
        help="zoo eager, and zoo with parallel.compile=true (torch.compile per block, as `zoo train` "
        "does); peers run as their users run them (eager). Both take parallel.cpu_linear=auto; `aten` "
        "is zoo eager with parallel.cpu_linear=aten, for auto against aten in the same rounds; `bf16` is zoo "
        "eager with parallel.mixed_precision=bf16 (CPU autocast)",
    )
    p.add_argument(
        "--tune-cache",
        type=Path,
        default=None,
        help="the CPU choices cache the zoo runs share "
        "(ZOO_CPU_TUNE; default: a fresh file for this run, so cpu_linear=auto measures in it)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="run every row this many times, zoo and peer back to "
        "back; report the median run and the median paired ratio",
    )
    p.add_argument(
        "--glibc-default",
        action="store_true",
        help="leave glibc's allocator thresholds alone "
        "(by default every model, zoo's and the peers', keeps freed memory for reuse, as `zoo train` does)",
    )
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument(
        "--out", type=Path, default=None, help="results file (default: benchmarks/results/peers-train-<machine>.md)"
    )
    p.add_argument("--no-write", action="store_true")
    common.add_worker_args(p)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    if args.tune_cache is None:
        import tempfile

        args.tune_cache = Path(tempfile.mkdtemp(prefix="zoo-peers-")) / "cpu-tune.json"
    os.environ["ZOO_CPU_TUNE"] = str(args.tune_cache)
    load_before = common.load()
    print(
        f"load average before: {load_before}; threads {args.threads}; batch {args.batch} x seq {args.seq}; "
        f"{args.rounds} rounds",
        flush=True,
    )
    mixer_of = {row: mixer for row, mixer, _, _ in models.ROWS}
    peer_of = {row: peer for row, _, peer, _ in models.ROWS}
    zoo_rounds: dict = {}  # (mixer, mode) -> one result per round; a zoo model shared by two rows runs once
    peer_rounds: dict = {}  # row -> one result per round
    rows = list(args.rows)
    if "attention" not in rows:  # the recurrent-vs-attention ratio needs zoo attention
        rows.append("attention")
    for r in range(args.rounds):
        # Each round runs every row's zoo and peer back to back, so a slow spell of a shared
        # machine hits both sides of a ratio; the rounds' medians are reported.
        done = set()
        for row in rows:
            for mode in args.zoo_modes:
                if (mixer_of[row], mode) not in done:
                    done.add((mixer_of[row], mode))
                    args.compile = mode == "compiled"
                    args.cpu_linear = "aten" if mode == "aten" else "auto"
                    args.bf16 = mode == "bf16"
                    zoo_rounds.setdefault((mixer_of[row], mode), []).append(run_one(mixer_of[row], "zoo", args))
            if row not in args.rows:
                continue
            prev = peer_rounds.get(row, [])
            if prev and prev[0].get("first_step_s", 0) > SLOW_S:
                prev.append(prev[0])  # a peer whose first step took over SLOW_S (HF's sequential Mamba) is timed once
            else:
                peer_rounds.setdefault(row, []).append(run_one(row, "peer", args))
            peer = peer_rounds[row][-1]
            msg = "  ".join(
                f"zoo {md} {fmt_tps(zoo_rounds[mixer_of[row], md][-1])} "
                f"({_ratio(zoo_rounds[mixer_of[row], md][-1], peer)})"
                for md in args.zoo_modes
            )
            print(f"round {r + 1} {row:24s} {peer_of[row]:34s} {fmt_tps(peer):>8s} tok/s | {msg}", flush=True)
        _write(zoo_rounds, peer_rounds, args, load_before, done=r + 1)


def _write(zoo_rounds, peer_rounds, args, load_before, done: int) -> None:
    """The report of the rounds so far: written after every round, so a run cut short keeps them."""
    import models

    mixer_of = {row: mixer for row, mixer, _, _ in models.ROWS}
    final = done == args.rounds
    load_after = common.load()
    if final:
        print(f"load average after: {load_after}")
    zoo_runs = {key: _median_run(runs) for key, runs in zoo_rounds.items()}
    results = {
        row: ({md: zoo_runs[mixer_of[row], md] for md in args.zoo_modes}, _median_run(peer_rounds[row]))
        for row in args.rows
    }
    per_round = {
        (row, md): _round_ratios(zoo_rounds[mixer_of[row], md], peer_rounds[row])
        for row in args.rows
        for md in args.zoo_modes
    }
    text = report(results, zoo_runs, per_round, args, load_before, load_after)
    extra = paired_modes(zoo_rounds, args)
    if extra:
        head, sep, tail = text.partition("\n## Ratio in each round")
        text = head + "\n".join(extra) + "\n" + sep + tail
    if not final:
        title, _, rest = text.partition("\n")
        text = f"{title}\n\nPartial: written after round {done} of {args.rounds}.\n{rest}"
    if final:
        print(text)
    if not args.no_write:
        common.write_report(text, args.out, "train")
        raw = (args.out or common.RESULTS / f"peers-train-{common.machine_slug()}.md").with_suffix(".json")
        raw.write_text(
            json.dumps(
                {"zoo": {f"{m} {md}": runs for (m, md), runs in zoo_rounds.items()}, "peer": peer_rounds}, indent=1
            )
            + "\n"
        )


def _median_run(runs: list) -> dict:
    """The run with the median tokens/s (the lower middle one for an even count); an error if any failed."""
    bad = [r for r in runs if "error" in r]
    if bad:
        return bad[0]
    ranked = sorted(runs, key=lambda r: r["tokens_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def _round_ratios(zoo_runs: list, peer_runs: list) -> list:
    """zoo / peer tokens/s in each round (None where a run failed)."""
    return [
        None if "error" in z or "error" in p else z["tokens_per_s"] / p["tokens_per_s"]
        for z, p in zip(zoo_runs, peer_runs)
    ]


def _median_ratio(ratios: list) -> str:
    """The headline ratio: the median of the rounds' paired ratios."""
    ok = sorted(r for r in ratios if r is not None)
    return "n/a" if len(ok) < len(ratios) or not ok else f"{statistics.median(ok):.2f}x"


def _ratio(a: dict, b: dict) -> str:
    if "error" in a or "error" in b:
        return "n/a"
    return f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x"


def report(results, zoo_runs, per_round, args, load_before, load_after) -> str:
    import models

    peer_of = {row: peer for row, _, peer, _ in models.ROWS}
    mixer_of = {row: mixer for row, mixer, _, _ in models.ROWS}
    modes = args.zoo_modes
    lines = [
        f"# Training step: zoo against the peers ({common.machine_slug()})",
        "",
        common.machine_line(),
        f"Threads pinned: torch.set_num_threads({args.threads}), OMP/MKL_NUM_THREADS={args.threads}. "
        f"Load average (1/5/15 min) before: {load_before}; after: {load_after}.",
        "",
        f"Command: `{common.command_line()}`. "
        f"Batch {args.batch} x seq {args.seq}, hidden 256, 4 layers, vocab 256, fp32, AdamW, random tokens; "
        f"forward + backward + optimizer step; {args.warmup} warm-up steps, then the median of up to "
        f"{args.repeats} timed steps (fewer once they pass {args.budget:.0f} s; `n` says how many, with the "
        f"min/max spread around the median; a model whose first step takes over {SLOW_S:.0f} s gets one more "
        "warm-up step and 3 timed steps). Every row runs in "
        f"{args.rounds} rounds, zoo and peer back to back in each, and the tables give each model's median "
        "round (its run, memory included), and zoo / peer is the median of the rounds' paired ratios, each "
        f"listed in the last table. A peer whose first step takes over {SLOW_S:.0f} s is timed in the first "
        "round only. One fresh subprocess per model; peak memory is the growth of its "
        "resident high-water mark (ru_maxrss) from just before the model is built. zoo runs eager and with "
        "`parallel.compile=true` (torch.compile per block, what `zoo train` does with that switch); the peers "
        "run eager, as their users run them on CPU. Freed memory: "
        + (
            "glibc's defaults (--glibc-default), for every model."
            if args.glibc_default
            else "kept for reuse in every process, zoo's and the peers' alike (zoo_core.cpu_memory, what `zoo train` "
            "does on CPU; glibc would otherwise page-fault every fresh tensor over its mmap threshold in again)."
        ),
        "",
        "## Tokens/s",
        "",
        "| model | peer | peer tok/s | "
        + " | ".join(f"zoo {md} tok/s" for md in modes)
        + " | "
        + " | ".join(f"zoo {md} / peer" for md in modes)
        + " | "
        + " | ".join(f"zoo {md} / zoo attention {md}" for md in modes)
        + " |",
        "|---|---|---|" + "---|" * (3 * len(modes)),
    ]
    for row, (zs, p) in results.items():
        attn = {md: zoo_runs.get(("attention", md)) for md in modes}
        cells = [row, peer_of[row], fmt_tps(p)]
        cells += [fmt_tps(zs[md]) for md in modes]
        cells += [f"**{_median_ratio(per_round[row, md])}**" for md in modes]
        cells += ["" if mixer_of[row] == "attention" or not attn[md] else _ratio(zs[md], attn[md]) for md in modes]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Ratio in each round",
        "",
        "| model | " + " | ".join(f"zoo {md} / peer" for md in modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    lines += [
        "| "
        + " | ".join(
            [row] + [" / ".join("n/a" if r is None else f"{r:.2f}x" for r in per_round[row, md]) for md in modes]
        )
        + " |"
        for row in results
    ]
    lines += [
        "",
        "## Memory, spread, parameters",
        "",
        "| model | peer peak MB | "
        + " | ".join(f"zoo {md} peak MB" for md in modes)
        + " | peer n, spread | "
        + " | ".join(f"zoo {md} n, spread" for md in modes)
        + " | zoo first step s ("
        + ", ".join(modes)
        + ") | params zoo / peer |",
        "|---|---|" + "---|" * (2 * len(modes)) + "---|---|---|",
    ]
    for row, (zs, p) in results.items():
        z0 = next(iter(zs.values()))
        cells = [row, fmt_mb(p)] + [fmt_mb(zs[md]) for md in modes]
        cells += [f"{p.get('steps', '-')}, {p.get('spread', '-')}"]
        cells += [f"{zs[md].get('steps', '-')}, {zs[md].get('spread', '-')}" for md in modes]
        cells += [", ".join(f"{zs[md].get('first_step_s', float('nan')):.1f}" for md in modes)]
        cells += [f"{z0.get('params', 0):,} / {p.get('params', 0):,}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _routes_section(zoo_runs, results, args)
    lines += _mfu_section(zoo_runs)
    lines += ["", "## Shapes and choices", ""]
    for key, note in models.SHAPE_NOTES.items():
        lines.append(f"- **{key}**: {note}")
    lines += [
        f"- {models.PEER_LM_NOTE}",
        "- Optimizers: zoo models use zoo's own `build_optimizer` (AdamW, weight decay on matrices only, "
        "foreach=False); peers use `torch.optim.AdamW` (defaults) with the same lr 3e-3, betas (0.9, 0.95), "
        "eps 1e-8, weight decay 0.1. Peers' loss is F.cross_entropy on their logits.",
        "",
        "## Builds",
        "",
    ]
    for row, (zs, p) in results.items():
        lines.append(
            f"- {row}: "
            + " | ".join(z.get("note", z.get("error", "")) for z in zs.values())
            + f" | {p.get('note', p.get('error'))}"
        )
    return "\n".join(lines) + "\n"


def _routes_section(zoo_runs, results, args) -> list:
    """Which route cpu_linear=auto took per linear shape; auto against aten where both ran."""
    import models

    mixer_of = {row: mixer for row, mixer, _, _ in models.ROWS}
    lines = [
        "",
        "## cpu_linear: routes chosen",
        "",
        f"`parallel.cpu_linear=auto` timed oneDNN against aten at each linear shape (M x K -> N; forward and both "
        f"gradients, interleaved rounds) in the first zoo process of this run and cached the choice "
        f"({args.tune_cache.name}, fresh for the run); oneDNN only where it measured >= 1.05x aten.",
        "",
    ]
    mixers = list(dict.fromkeys(mixer_of[row] for row in results))
    for mixer in mixers:
        for md in args.zoo_modes:
            run = zoo_runs.get((mixer, md), {})
            routes = run.get("cpu_linear", {})
            if md == "eager" and routes.get("shapes") is not None:
                shapes = routes["shapes"]
                lines.append(
                    f"- {mixer}: " + (", ".join(f"{k} {v}" for k, v in sorted(shapes.items())) or "no float32 linear")
                )
    return lines


def _mfu_section(zoo_runs) -> list:
    """Each zoo run's model FLOP/s against the GEMM peak measured in the same process."""
    rows = [(key, run) for key, run in zoo_runs.items() if "mfu" in run]
    if not rows:
        return []
    lines = [
        "",
        "## MFU against this CPU's measured GEMM peak",
        "",
        "Training FLOPs per token = 3 x the model's forward count (the mixers' own `flops_per_token`, as "
        "`zoo throughput` counts them); the peak is zoo_core/loop/cpu/peak.py's calibration (the best "
        "square matmul, fp32: torch's BLAS or oneDNN; bf16: torch.mm), measured in the same process right "
        "after the timed steps, so both see the same load. Median round.",
        "",
        "| model | mode | tok/s | train GFLOP/token | GEMM peak GFLOP/s (dtype, route, N) | MFU | param dtypes |",
        "|---|---|---|---|---|---|---|",
    ]
    for (mixer, md), run in rows:
        peak = run["gemm_peak"]
        dtype = "bf16" if md == "bf16" else "fp32"
        lines.append(
            f"| {mixer} | {md} | {fmt_tps(run)} | {run['train_flops_per_token'] / 1e9:.4f} | "
            f"{peak['flops'] / 1e9:,.0f} ({dtype}, {peak['route']}, {peak['n']}) | **{100 * run['mfu']:.0f}%** | "
            f"{', '.join(run.get('param_dtypes', []))} |"
        )
    return lines


def paired_modes(zoo_rounds, args) -> list:
    """Against zoo eager (fp32, cpu_linear=auto), paired per round: auto / aten and bf16 / fp32."""
    lines = []
    for other, title, num, den in (
        ("aten", "cpu_linear=auto against aten", "auto", "aten"),
        ("bf16", "bf16 autocast against fp32 (both cpu_linear=auto)", "bf16", "fp32"),
    ):
        if not {"eager", other} <= set(args.zoo_modes):
            continue
        lines += [
            "",
            f"## {title} (same rounds)",
            "",
            f"| model | {num} tok/s | {den} tok/s | {num} / {den} (median of rounds) | each round |",
            "|---|---|---|---|---|",
        ]
        for (mixer, md), runs in zoo_rounds.items():
            if md != "eager" or (mixer, other) not in zoo_rounds:
                continue
            b = zoo_rounds[mixer, other]
            a, b = (runs, b) if other == "aten" else (b, runs)
            ratios = _round_ratios(a, b)
            lines.append(
                f"| {mixer} | {fmt_tps(_median_run(a))} | {fmt_tps(_median_run(b))} | "
                f"**{_median_ratio(ratios)}** | "
                + " / ".join("n/a" if r is None else f"{r:.2f}x" for r in ratios)
                + " |"
            )
    return lines


if __name__ == "__main__":
    main()
