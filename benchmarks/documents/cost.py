"""What data.documents=reset costs: training-step tokens/s under stream and under reset, per mixer.

    python benchmarks/documents/cost.py [--mixers hawk,attention] [--out]

For every registered mixer (or --mixers), a small model (--dim 128, --layers 2) takes
forward+backward steps on a (--batch 4) x (--seq-len 256) batch of packed documents
of about --doc-len 64 tokens. The stream and the reset step alternate, so the load of
the machine falls on both alike; the table gives each one's median tokens/s and the
reset/stream ratio (the target, issue #27: reset at most 10% slower). A mixer without
`supports_resets` is listed as not supported. `--out` writes the table to
benchmarks/results/documents-cost-<cpu>.md (or to the path given).
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"


def cpu_description() -> dict[str, str]:
    """lscpu's model name, family and model, and the SIMD/matrix flags that decide CPU kernels."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model", "flags") and key not in fields:
                fields[key] = value.strip()
            if "flags" in fields:
                break
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    known = (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AMX", "amx_tile"))
    simd = [name for name, flag in known if flag in flags]
    missing = [name for name, flag in known if flag not in flags]
    return {
        "model": fields.get("model name") or platform.processor() or "unknown cpu",
        "family": f"family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}",
        "flags": " + ".join(simd) + ("; no " + ", no ".join(missing) if missing else ""),
    }


def cpu_slug(model: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"{slug[:40]}-{torch.get_num_threads()}thr"


def packed_starts(batch: int, seq_len: int, doc_len: int, seed: int = 0) -> torch.Tensor:
    """Document starts for rows of packed documents of about doc_len tokens (doc_len/2 to 3*doc_len/2)."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.zeros(batch, seq_len, dtype=torch.bool)
    for r in range(batch):
        t = int(torch.randint(0, doc_len, (1,), generator=g))  # the first document continues one from before
        while t < seq_len:
            starts[r, t] = True
            t += int(torch.randint(max(doc_len // 2, 1), max(3 * doc_len // 2, 2), (1,), generator=g))
    return starts


def build(name: str, args, registry):
    from zoo_core.config import load_config, resolve
    from zoo_core.loop.model import build_model

    overrides = [f"model.mixer={name}", f"model.dim={args.dim}", f"model.n_layers={args.layers}"]
    cfg = resolve(load_config(None, [*overrides, f"data.seq_len={args.seq_len}"]), registry)
    return build_model(cfg, registry, args.vocab)


def measure(name: str, args, registry) -> dict:
    from zoo_core.loop.validate import supports_resets

    entry = registry.get("mixers", name)
    if not supports_resets(entry, args.dim, {"name": name}):
        return {"mixer": name, "note": "resets: not supported"}
    try:
        model = build(name, args, registry)
    except Exception as exc:  # a mixer that needs options this shape does not give
        return {"mixer": name, "note": f"not built: {str(exc).splitlines()[0][:80]}"}
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=g)
    targets = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=g)
    starts = packed_starts(args.batch, args.seq_len, args.doc_len)

    def step(docs: dict) -> float:
        t0 = time.perf_counter()
        out, _ = model(inputs, targets, **docs)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    modes = {"stream": {}, "reset": {"resets": starts}}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.warmup):
        for docs in modes.values():
            step(docs)
    for i in range(args.repeats):  # alternating, and which goes first alternates too
        for mode in list(modes)[:: 1 if i % 2 == 0 else -1]:
            times[mode].append(step(modes[mode]))
    tokens = args.batch * args.seq_len
    stream, reset = (tokens / statistics.median(times[m]) for m in modes)
    return {"mixer": name, "stream": stream, "reset": reset, "ratio": reset / stream}


def table(rows: list[dict], args) -> str:
    cpu = cpu_description()
    lines = [
        "# data.documents: reset vs stream, training-step tokens/s (CPU)",
        "",
        f"CPU: {cpu['model']} ({cpu['family']}; {cpu['flags']}), {torch.get_num_threads()} threads; "
        f"torch {torch.__version__}; Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        f"Shape: batch {args.batch} x {args.seq_len} tokens, dim {args.dim}, {args.layers} layers, vocab "
        f"{args.vocab}, documents of about {args.doc_len} tokens; forward+backward, median of {args.repeats} "
        f"alternating steps each after {args.warmup} warmup.",
        "",
        "| mixer | stream tok/s | reset tok/s | reset / stream |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['mixer']} | | | {r['note']} |")
        else:
            lines.append(f"| {r['mixer']} | {r['stream']:,.0f} | {r['reset']:,.0f} | {r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mixers", default="", help="comma-separated mixer names (default: every registered one)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=264)
    p.add_argument("--doc-len", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", nargs="?", const="", default=None, help="write the table (default path in results/)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from zoo_core.registry import get_registry

    registry = get_registry()
    names = [n for n in args.mixers.split(",") if n] or registry.names("mixers")
    rows = []
    for name in names:
        rows.append(measure(name, args, registry))
        print(rows[-1], file=sys.stderr, flush=True)
    text = table(rows, args)
    print(text)
    if args.out is not None:
        path = Path(args.out) if args.out else RESULTS / f"documents-cost-{cpu_slug(cpu_description()['model'])}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
