"""Data pipeline benchmark: loader tokens/s against what training consumes, and
peak memory while preparing generated corpora of growing size.

    python benchmarks/data/bench_data.py [--sizes-mb 64 1024] [--out benchmarks/results/data-cpu.md]

Everything is generated under a temporary directory (or --work) and removed.
Each prepare runs in a fresh process, so its peak RSS (and its workers') is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREPARE_CHILD = r"""
import json, resource, sys, time
from zoo_core.commands.tokenizer import tokenizer_from_spec
from zoo_core.data.prepare import prepare
from zoo_core.data.shards import read_manifest
src, out, spec, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tok = tokenizer_from_spec(spec)
t = time.perf_counter()
prepare(src, tok, out, progress=False, workers=workers, shard_mb=64)
wall = time.perf_counter() - t
m = read_manifest(out)
# VmHWM: this process's peak RSS since exec (ru_maxrss would include the parent's size at fork).
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"wall_s": wall, "tokens": sum(s["tokens"] for s in m["splits"].values()),
                  "source_bytes": m["source_bytes"], "shards": sum(len(s["shards"]) for s in m["splits"].values()),
                  "main_rss_mb": hwm / 1024,
                  "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {system}"


def bench_prepare(work: Path, size_mb: int, spec: str, workers: int) -> dict:
    from zoo_core.data.synthetic import write_big_text

    src = write_big_text(work / f"src-{size_mb}", size_mb << 20, file_bytes=min(size_mb, 64) << 20)
    out = work / f"prep-{size_mb}-{spec.split(':')[0]}"
    res = subprocess.run(
        [sys.executable, "-c", PREPARE_CHILD, str(src), str(out), spec, str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    shutil.rmtree(src)
    shutil.rmtree(out)
    stats.update(
        size_mb=size_mb,
        tokenizer=spec.split(":")[0],
        workers=workers,
        mb_per_s=stats["source_bytes"] / 2**20 / stats["wall_s"],
    )
    return stats


def bench_loader(work: Path, G: int, T: int, seconds: float) -> dict:
    import numpy as np  # noqa: F401

    from zoo_core.data.corpus import CorpusConfig, CorpusSource
    from zoo_core.data.mixture import MixtureConfig, MixtureSource
    from zoo_core.data.prepare import prepare
    from zoo_core.data.synthetic import write_big_text
    from zoo_core.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    dirs = []
    for i in range(2):
        src = write_big_text(work / f"load-src{i}", 48 << 20, file_bytes=8 << 20, seed=i)
        dirs.append(prepare(str(src), tok, work / f"load{i}", progress=False, workers=2, shard_mb=4))
    out = {}
    for name, make in (
        (
            "corpus",
            lambda: CorpusSource(CorpusConfig(path=str(dirs[0])), tokenizer=tok, split="train", seq_len=T, n_streams=G),
        ),
        (
            "mixture",
            lambda: MixtureSource(
                MixtureConfig(sources={str(dirs[0]): 0.7, str(dirs[1]): 0.3}),
                tokenizer=tok,
                split="train",
                seq_len=T,
                n_streams=G,
            ),
        ),
    ):
        src = make()
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < seconds:  # includes hashing each shard on first touch (verify=lazy)
            src.batch(range(G))
            n += 1
        first = n * G * T / (time.perf_counter() - t)
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < seconds:
            src.batch(range(G))
            n += 1
        out[name] = {"first_pass_tok_s": first, "steady_tok_s": n * G * T / (time.perf_counter() - t)}
    return out


def bench_training(work: Path, steps: int) -> float:
    """tokens/s of the default model (attention, dim 256, 4 layers, 32 x 256 tokens a step) on this CPU."""
    from zoo_core.train import train

    train(
        None,
        [
            f"runs_dir={work}",
            "name=t",
            f"train.steps={steps}",
            "train.eval_every=0",
            "train.ckpt_every=0",
            "train.sample_tokens=0",
            "train.log_every=1",
            "train.progress=false",
            "train.eval_batches=1",
        ],
    )
    rows = [json.loads(l) for l in (work / "t" / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]  # the first step warms up
    return sum(tps) / len(tps)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes-mb", type=int, nargs="+", default=[64, 1024])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--hf-mb", type=int, default=16, help="corpus size for the BPE-tokenizer prepare (0: skip)")
    p.add_argument("--train-steps", type=int, default=4)
    p.add_argument("--work", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-data-", dir=args.work))
    os.environ.setdefault("ZOO_CACHE", str(work / "cache"))
    try:
        # Prepares first, while this process is small: workers' peak RSS counts pages shared at fork.
        prep = [bench_prepare(work, s, "bytes", args.workers) for s in args.sizes_mb]
        if args.hf_mb:
            from zoo_core.data.synthetic import write_big_text
            from zoo_core.tokenizers.training import train_bpe

            tok_json = train_bpe([str(write_big_text(work / "tok-src", 4 << 20))], 4096, work / "bpe.json")
            prep.append(bench_prepare(work, args.hf_mb, f"hf:{tok_json}", args.workers))
        loader = bench_loader(work, G=32, T=256, seconds=3.0)
        training = bench_training(work, args.train_steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# Data pipeline on CPU",
        "",
        f"Machine: {machine()}. Shared with other jobs while measured, so timings are noisy.",
        f"Command: `python benchmarks/data/bench_data.py {' '.join(sys.argv[1:])}`",
        "",
        "## Loader throughput (32 streams x 256 tokens per batch, bytes tokenizer, 4 MB shards)",
        "",
        "| source | first pass, incl. sha256 of each shard on first read (tokens/s) | steady (tokens/s) |",
        "|---|---|---|",
    ]
    for name, r in loader.items():
        lines.append(f"| {name} | {r['first_pass_tok_s']:,.0f} | {r['steady_tok_s']:,.0f} |")
    lines += [
        "",
        f"Training consumes {training:,.0f} tokens/s here (default model: attention, dim 256, 4 layers, "
        f"32 x 256 tokens per step, mean of {args.train_steps - 1} steps after the first): the corpus loader "
        f"reads {loader['corpus']['steady_tok_s'] / training:,.0f}x faster, the mixture "
        f"{loader['mixture']['steady_tok_s'] / training:,.0f}x.",
        "",
        f"## Prepare: peak memory does not grow with the corpus ({args.workers} workers, 64 MB shards)",
        "",
        "| corpus | tokenizer | shards | wall (s) | MB/s | peak RSS main (MB) | peak RSS largest worker (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in prep:
        lines.append(
            f"| {r['size_mb']:,} MB generated text | {r['tokenizer']} | {r['shards']} | {r['wall_s']:.1f} | "
            f"{r['mb_per_s']:.1f} | {r['main_rss_mb']:.0f} | {r['worker_rss_mb']:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
