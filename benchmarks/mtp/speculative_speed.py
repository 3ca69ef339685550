"""Self-speculative greedy decoding against plain greedy decoding, on a small trained MTP model.

    .venv/bin/python benchmarks/mtp/speculative_speed.py [--mixer attention --steps 400 --tokens 200]

1. trains (or reuses) a small byte-level model on Shakespeare with the `mtp`
   head (n_heads=4), through the one training loop;
2. decodes the same prompts with `zoo_core.generate.generate(temperature=0)`
   and with `zoo_mtp.speculative.speculative_generate` for n_draft = 1..n-1,
   checks that the outputs are identical, and reports tokens/s (median of
   `--repeats` runs, batch 1, after a warm-up), the share of drafts accepted
   and the tokens emitted per trunk forward round.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mixer", default="attention")
    p.add_argument("--form", default="independent")
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args()

    import torch

    from zoo_core.generate import generate
    from zoo_core.runs import load_run
    from zoo_core.train import train
    from zoo_mtp.speculative import SpeculativeStats, speculative_generate

    name = f"mtp-spec-{args.mixer}-{args.form}-n{args.n_heads}-d{args.dim}-s{args.steps}"
    run_dir = Path(args.runs_dir) / name
    t0 = time.perf_counter()
    train(
        None,
        [
            f"runs_dir={args.runs_dir}",
            f"name={name}",
            f"model.mixer.name={args.mixer}",
            f"model.dim={args.dim}",
            f"model.n_layers={args.layers}",
            "model.loss.name=mtp",
            f"model.loss.n_heads={args.n_heads}",
            f"model.loss.form={args.form}",
            f"data.seq_len={args.seq}",
            f"train.global_batch={args.batch}",
            f"train.steps={args.steps}",
            "train.eval_every=0",
            "train.eval_batches=8",
            "train.sample_tokens=0",
            "train.progress=false",
            "optim.lr=3e-3",
            f"optim.warmup_steps={min(50, args.steps // 4)}",
            f"train.threads={args.threads}",
            "train.log_every=25",
        ],
    )
    train_s = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    run = load_run(run_dir, device="cpu")
    model, tok = run.model, run.tokenizer
    val = _last_val(run_dir)
    prompts = ["ROMEO:\n", "KING HENRY:\nWhat", "First Citizen:\nWe are ", "JULIET:\nO "]
    ids = [tok.encode(x) for x in prompts]

    def timed(fn):  # CPU time of this (single-threaded) process: the machine is shared
        fn()  # warm-up
        times, out = [], None
        for _ in range(args.repeats):
            t = time.process_time()
            out = fn()
            times.append(time.process_time() - t)
        return out, statistics.median(times)

    rows = []
    plain_tps = []
    for prompt in ids:
        out, s = timed(lambda: generate(model, [prompt], args.tokens, temperature=0))
        plain_tps.append((out, args.tokens / s))
    base = statistics.median(t for _, t in plain_tps)
    rows.append(("plain greedy (`zoo_core.generate`)", "-", "-", f"{base:.0f}", "1.00x", "yes"))
    for n_draft in range(1, args.n_heads):
        tps, stats, same = [], SpeculativeStats(), True
        for prompt, (plain, _) in zip(ids, plain_tps):
            out, s = timed(lambda: speculative_generate(model, [prompt], args.tokens, n_draft=n_draft))
            speculative_generate(model, [prompt], args.tokens, n_draft=n_draft, stats=stats)
            tps.append(args.tokens / s)
            same &= out[0] == plain[0]
        med = statistics.median(tps)
        rows.append(
            (
                f"self-speculative, {n_draft} draft(s)",
                f"{stats.acceptance:.1%}",
                f"{stats.tokens_per_round:.2f}",
                f"{med:.0f}",
                f"{med / base:.2f}x",
                "yes" if same else "NO",
            )
        )
        print(rows[-1], flush=True)

    sample = tok.decode(plain_tps[0][0][0][:120]).replace("\n", " / ")
    lines = [
        f"Model: byte-level Shakespeare, {args.mixer} x {args.layers} layers, dim {args.dim}, `mtp` head "
        f"n_heads={args.n_heads} form={args.form}, trained {args.steps} steps x {args.batch} x {args.seq} tokens "
        f"({train_s / 60:.1f} min); val loss (head 1) {val.get('val_loss', float('nan')):.3f}, "
        f"bits/byte {val.get('val_bpb', float('nan')):.3f}.",
        f"Decoding: batch 1, {args.tokens} new tokens, {len(prompts)} prompts, median of {args.repeats} runs "
        f"per prompt after a warm-up, tokens per CPU-second of the process ({args.threads} thread(s); "
        f"CPU time, not wall time, because the machine is shared), fp32. Machine: {platform.machine()} "
        f"{os.cpu_count()} cores, Linux {platform.release()}, shared with other jobs.",
        f"Greedy sample: `{sample}`",
        "",
        "| decoder | drafts accepted | tokens per round | tokens/s | speed-up | identical to plain greedy |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)


def _last_val(run_dir: Path) -> dict:
    import json

    vals = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if "val_loss" in l]
    return vals[-1] if vals else {}


if __name__ == "__main__":
    main()
