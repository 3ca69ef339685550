"""Every variant of one model's training step in ONE process, one step each in turn: ratios on a busy machine.

    python benchmarks/peers/paired_step.py --out benchmarks/results/peers-paired-<machine>.md
    python benchmarks/peers/paired_step.py --rows attention --rounds 6 --no-write

The shape of train_step.py (batch 8 x seq 256, dim 256, 4 layers, vocab 256, AdamW). For each row one
process builds zoo's model and the peer's (and, for the recurrent rows, zoo's attention) and then runs
rounds of one training step of every variant back to back, the order rotating each round, so that a
slow spell of a shared machine lands on all of them; each ratio is taken within a round and the median
over rounds is reported. train_step.py's separate processes, minutes apart, cannot give ratios within
5% when other jobs load the cores; this can. Variants:

- auto: zoo fp32, parallel.cpu_linear=auto (what `zoo train` does on CPU);
- aten: the same model with parallel.cpu_linear=aten (`cpu_linear.set_cpu_linear` between steps);
- bf16: the same model under CPU bf16 autocast (parallel.mixed_precision=bf16), rows in --bf16-rows;
- peer: the peer of train_step.py (models.ROWS), eager fp32;
- attention: zoo attention fp32 auto, for "recurrent / attention" (rows other than attention).

MFU (rows in --bf16-rows): training FLOPs per token (3 x the model's forward count) x tokens/s over the
GEMM peak of zoo_core/loop/cpu/peak.py in the step's dtype, calibrated in the same process after every
round (the median of the rounds' MFU). Peak memory is not measured here (one process holds every
variant): train_step.py reports it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DEFAULT_ROWS = ["attention", "mamba2", "mamba (HF use_mambapy)", "hawk", "griffin", "mingru", "minlstm"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", default=DEFAULT_ROWS)
    p.add_argument("--bf16-rows", nargs="*", default=["attention"], help="rows that also run the bf16 variant")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of every variant first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    common.pin_threads(args.threads)
    from zoo_core.cpu_memory import keep_freed_memory

    keep_freed_memory()  # what zoo train does on CPU; every variant in this process alike
    import models
    import torch

    load_before = common.load()
    print(f"load average before: {load_before}", flush=True)
    sections, started = [], time.strftime("%Y-%m-%d %H:%M %Z")
    for row in args.rows:
        sections.append(_run_row(row, args, models, torch))
        if not args.no_write:
            _write(sections, args, load_before, started, done=row == args.rows[-1])
    if args.no_write:
        print(_report(sections, args, load_before, started))


def _run_row(row: str, args, models, torch) -> dict:
    from zoo_core import cpu_linear
    from zoo_core.loop.cpu.peak import calibrate

    spec = {r: (mixer, peer, build) for r, mixer, peer, build in models.ROWS}
    mixer, peer_name, build_peer = spec[row]
    T, B = args.seq, args.batch
    torch.manual_seed(0)
    tokens = torch.randint(0, models.VOCAB, (B, T + 1))
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    zoo = models.build_zoo(mixer, T)
    peer = build_peer(T)
    attn = models.build_zoo("attention", T) if mixer != "attention" else None

    def stepper(built, mode: str | None = None, bf16: bool = False):
        model, loss_fn, opt, _ = built

        def step() -> float:
            if mode is not None:
                cpu_linear.set_cpu_linear(mode, say=False)
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model, x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return time.perf_counter() - t0

        return step

    variants = {"auto": stepper(zoo, "auto"), "aten": stepper(zoo, "aten")}
    if row in args.bf16_rows:
        variants["bf16"] = stepper(zoo, "auto", bf16=True)
    variants["peer"] = stepper(peer, "auto")
    if attn is not None:
        variants["attention"] = stepper(attn, "auto")
    names = list(variants)
    for _ in range(args.warmup):  # auto measures its shapes in its first step
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            times[name].append(variants[name]())
        if row in args.bf16_rows:
            peaks["fp32"].append(calibrate(torch.float32)["flops"])
            peaks["bf16"].append(calibrate(torch.bfloat16)["flops"])
        print(f"{row} round {r + 1}: " + "  ".join(f"{n} {B * T / times[n][-1]:,.0f}" for n in names), flush=True)
    split = {}
    if row in args.bf16_rows:  # where each step's time goes: matmul ops against the rest
        split = {n: common.profile_split(variants[n]) for n in ("auto", "bf16")}
    cpu_linear.set_cpu_linear("auto", say=False)
    return {
        "row": row,
        "mixer": mixer,
        "peer": peer_name,
        "tps": {n: [B * T / t for t in ts] for n, ts in times.items()},
        "peaks": peaks,
        "train_flops_per_token": 3.0 * zoo[0].flops_per_token(T),
        "attention_train_flops_per_token": None if attn is None else 3.0 * attn[0].flops_per_token(T),
        "profile_ms": split,
        "routes": cpu_linear.choices(),
        "attention_kernels": _attention_kernels(),
        "param_dtypes": sorted({str(q.dtype).replace("torch.", "") for q in zoo[0].parameters()}),
    }


def _attention_kernels() -> dict[str, str]:
    """zoo-attention's CPU kernel per attention shape (backend=auto), as decided in this process."""
    try:
        from zoo_attention import cpu_route
    except ImportError:
        return {}
    return cpu_route.choices()


def _ratios(sec: dict, a: str, b: str) -> list[float]:
    return [x / y for x, y in zip(sec["tps"][a], sec["tps"][b])]


def _fmt(ratios: list[float]) -> str:
    return f"**{statistics.median(ratios):.2f}x** ({' / '.join(f'{r:.2f}' for r in ratios)})"


def _report(sections, args, load_before, started) -> str:
    lines = [
        f"# Training step, every variant in one process, rounds interleaved ({common.machine_slug()})",
        "",
        f"Command: `{common.command_line()}`",
        "",
        common.machine_line(),
        f"Started {started}. Threads pinned: {args.threads}. Load average (1/5/15 min) before: {load_before}; "
        f"after: {common.load()}.",
        "",
        f"Batch {args.batch} x seq {args.seq}, dim 256, 4 layers, vocab 256, AdamW; {args.warmup} untimed step(s) "
        f"of every variant, then {args.rounds} rounds of one step of each, order rotating. Ratios: the median "
        "of the rounds' ratios (each round's in brackets). auto = zoo fp32 with parallel.cpu_linear=auto, "
        "aten = the same model with cpu_linear=aten, bf16 = the same model under CPU bf16 autocast, peer = "
        "train_step.py's peer, attention = zoo attention fp32 auto in the same process.",
        "",
        "Training FLOPs per token: 3 x the model's forward count (`flops_per_token`); for the recurrent rows "
        "also as a ratio to zoo attention's, so that zoo / zoo attention in tokens/s can be read against the "
        "work each token costs (equal FLOPs/s: tokens/s ratio = 1 / FLOPs ratio).",
        "",
        "| model | peer | zoo auto tok/s | peer tok/s | zoo / peer | auto / aten | zoo / zoo attention "
        "| FLOPs/token, vs attention | FLOPs/s vs attention |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sections:
        attn = _fmt(_ratios(s, "auto", "attention")) if "attention" in s["tps"] else ""
        flops = f"{s['train_flops_per_token'] / 1e6:.1f} M"
        per_s = ""
        if s.get("attention_train_flops_per_token"):
            fr = s["train_flops_per_token"] / s["attention_train_flops_per_token"]
            flops += f", {fr:.2f}x"
            per_s = f"{statistics.median(_ratios(s, 'auto', 'attention')) * fr:.2f}x"
        lines.append(
            f"| {s['row']} | {s['peer']} | {statistics.median(s['tps']['auto']):,.0f} | "
            f"{statistics.median(s['tps']['peer']):,.0f} | {_fmt(_ratios(s, 'auto', 'peer'))} | "
            f"{_fmt(_ratios(s, 'auto', 'aten'))} | {attn} | {flops} | {per_s} |"
        )
    bf = [s for s in sections if "bf16" in s["tps"]]
    if bf:
        lines += [
            "",
            "## bf16 autocast against fp32, and MFU",
            "",
            "MFU = training FLOPs per token x tokens/s / the GEMM peak in the step's dtype, the peak calibrated "
            "after every round in this process (zoo_core/loop/cpu/peak.py: best square matmul, N <= 1024).",
            "",
            "| model | bf16 tok/s | fp32 (auto) tok/s | bf16 / fp32 | GEMM peak fp32 / bf16 GFLOP/s (median) "
            "| MFU fp32 | MFU bf16 | param dtypes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in bf:
            f = s["train_flops_per_token"]
            mfu32 = statistics.median(f * t / pk for t, pk in zip(s["tps"]["auto"], s["peaks"]["fp32"]))
            mfu16 = statistics.median(f * t / pk for t, pk in zip(s["tps"]["bf16"], s["peaks"]["bf16"]))
            pk32, pk16 = (statistics.median(s["peaks"][d]) / 1e9 for d in ("fp32", "bf16"))
            lines.append(
                f"| {s['row']} | {statistics.median(s['tps']['bf16']):,.0f} | "
                f"{statistics.median(s['tps']['auto']):,.0f} | {_fmt(_ratios(s, 'bf16', 'auto'))} | "
                f"{pk32:,.0f} / {pk16:,.0f} | **{100 * mfu32:.0f}%** | **{100 * mfu16:.0f}%** | "
                f"{', '.join(s['param_dtypes'])} |"
            )
        lines += [
            "",
            "Where a step's time goes (torch.profiler, 2 steps of each after the rounds; self CPU ms per step; "
            "matmul = linear, mm, bmm and SDPA kernels). The bound is the bf16 / fp32 ratio if the bf16 matmuls "
            "took the fp32 matmul time x (fp32 peak / bf16 peak) and everything else took its fp32 time: what "
            "bf16 matrix units alone can give at this model's mix.",
            "",
            "| model | fp32 matmul / other ms | bf16 matmul / other ms | bf16 matmul speed-up | bound from the peaks |",
            "|---|---|---|---|---|",
        ]
        for s in bf:
            (m32, o32), (m16, o16) = s["profile_ms"]["auto"], s["profile_ms"]["bf16"]
            pk32, pk16 = (statistics.median(s["peaks"][d]) for d in ("fp32", "bf16"))
            bound = (m32 + o32) / (m32 * pk32 / pk16 + o32)
            lines.append(
                f"| {s['row']} | {m32:.0f} / {o32:.0f} | {m16:.0f} / {o16:.0f} | {m32 / m16:.2f}x | **{bound:.2f}x** |"
            )
    kernels = {k: v for s in sections for k, v in s.get("attention_kernels", {}).items()}
    if kernels:
        lines += ["", "## CPU attention kernel per shape (zoo-attention backend=auto; B x H x Hkv x T x hd)", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(kernels.items())]
    lines += ["", "## cpu_linear=auto: routes taken (M x K -> N)", ""]
    lines += [
        f"- {s['row']}: " + (", ".join(f"{k} {v}" for k, v in sorted(s["routes"].items())) or "none timed")
        for s in sections
    ]
    return "\n".join(lines) + "\n"


def _write(sections, args, load_before, started, done: bool) -> None:
    text = _report(sections, args, load_before, started)
    if not done:
        title, _, rest = text.partition("\n")
        text = f"{title}\n\nPartial: written after row {len(sections)} of {len(args.rows)}.\n{rest}"
    common.write_report(text, args.out, "paired")
    raw = (args.out or common.RESULTS / f"peers-paired-{common.machine_slug()}.md").with_suffix(".json")
    meta = {"command": common.command_line(), "machine": common.machine(), "git": common.git_rev()}
    meta.update(load_before=load_before, load_after=common.load(), started=started)
    raw.write_text(json.dumps({**meta, "rows": sections}, indent=1) + "\n")


if __name__ == "__main__":
    main()
