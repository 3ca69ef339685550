"""Cross-architecture comparisons at equal compute (Languini's method, for every registered architecture).

For each architecture x size in a spec: measure training throughput on this
hardware, turn the compute budget (device-seconds) into a number of steps,
train (resumably; finished runs are skipped), and evaluate bits per byte.
Then write results.csv, results.md, plots and per-architecture power-law fits.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf
from tqdm import tqdm

from zoo_core.errors import UserError, nearest

SPEC_KEYS = ("name", "budget", "base", "architectures", "sizes", "runs_dir", "throughput_repeats")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


@dataclasses.dataclass
class Spec:
    name: str
    budget_s: float
    base: List[str]
    architectures: Dict[str, List[str]]
    sizes: Dict[str, List[str]]
    runs_dir: str
    throughput_repeats: int = 5


def parse_budget(value: Any) -> float:
    """'90s', '2m', '1.5h' or a number of seconds -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-z]*)\s*", str(value))
    if not m or (m.group(2) and m.group(2) not in _UNITS):
        raise UserError(f"budget '{value}' is not a duration; write it like 90s, 2m or 1.5h")
    return float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1)


def _overrides(block: Any, where: str) -> List[str]:
    """A mapping ({model.dim: 64} or nested) or a list of key=value strings -> overrides."""
    if block is None:
        return []
    if isinstance(block, list):
        return [str(x) for x in block]
    if not isinstance(block, dict):
        raise UserError(f"{where} must be a mapping of config keys to values, or a list of key=value")
    flat: List[str] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and not ("name" in node and prefix.endswith(("mixer", "block", "loss", "source", "tokenizer"))):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat.append(f"{prefix}={json.dumps(node) if isinstance(node, (list, dict)) else node}")
    walk("", block)
    return flat


def load_spec(path: str) -> Spec:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"comparison spec '{path}' does not exist; see benchmarks/scaling/cpu-tiny.yaml")
    data = OmegaConf.to_container(OmegaConf.load(p))
    for key in data:
        if key not in SPEC_KEYS:
            best = nearest(key, SPEC_KEYS)
            raise UserError(f"unknown spec key '{key}'{f'; did you mean {best!r}?' if best else ''} "
                            f"(valid: {', '.join(SPEC_KEYS)})")
    for key in ("budget", "architectures"):
        if key not in data:
            raise UserError(f"spec '{path}' needs '{key}'")
    archs = {str(k): _overrides(v, f"architectures.{k}") for k, v in data["architectures"].items()}
    sizes = {str(k): _overrides(v, f"sizes.{k}") for k, v in (data.get("sizes") or {"default": {}}).items()}
    name = data.get("name") or p.stem
    return Spec(name, parse_budget(data["budget"]), _overrides(data.get("base"), "base"), archs, sizes,
                data.get("runs_dir") or f"runs/compare/{name}", int(data.get("throughput_repeats", 5)))


def run_one(spec: Spec, arch: str, size: str, registry: Any, progress: bool) -> Dict[str, Any]:
    from zoo_core.config import load_config, resolve
    from zoo_core.model import LanguageModel
    from zoo_core.throughput import measure
    from zoo_core.train import train
    import torch

    name = f"{arch}-{size}"
    run_dir = Path(spec.runs_dir) / name
    result_file = run_dir / "compare.json"
    if result_file.exists():
        done = json.loads(result_file.read_text())
        if done.get("budget_s") == spec.budget_s:
            return done  # finished earlier: skip
    overrides = spec.base + spec.architectures[arch] + spec.sizes[size]
    cfg = resolve(load_config(None, overrides + [f"name={name}", f"runs_dir={spec.runs_dir}"]), registry)
    # Throughput is measured once per run and kept, so a resumed run keeps its step count.
    tp_file = run_dir / "throughput.json"
    if tp_file.exists():
        tp = json.loads(tp_file.read_text())
    else:
        r = measure(cfg, registry, cfg.train.micro_batch or cfg.train.global_batch, warmup=2,
                    repeats=spec.throughput_repeats)
        tp = dataclasses.asdict(r)
        run_dir.mkdir(parents=True, exist_ok=True)
        tp_file.write_text(json.dumps(tp, indent=2))
    tokens_per_step = cfg.train.global_batch * cfg.data.seq_len
    steps = max(1, int(tp["tokens_per_s"] * spec.budget_s / tokens_per_step))
    out = train(None, overrides + [f"name={name}", f"runs_dir={spec.runs_dir}", f"train.steps={steps}",
                                   f"train.progress={str(progress).lower()}"])
    with torch.device("meta"):
        model = LanguageModel(cfg.model, registry, cfg.model.vocab_size or 264)
    val = out.get("val") or {}
    row = {"arch": arch, "size": size, "params": model.num_params(), "params_non_embedding": model.num_params(False),
           "train_flops_per_token": tp["flops_per_token"], "tokens_per_s": tp["tokens_per_s"], "steps": steps,
           "tokens": steps * tokens_per_step, "compute_flops": tp["flops_per_token"] * steps * tokens_per_step,
           "budget_s": spec.budget_s, "state_bytes": model.state_size(cfg.data.seq_len),
           "val_loss": val.get("loss"), "val_bpb": val.get("bpb"), "val_accuracy": val.get("accuracy"),
           "device": tp["device"], "run_dir": str(run_dir)}
    result_file.write_text(json.dumps(row, indent=2))
    return row


def run_spec(spec: Spec, registry: Any, out_dir: Optional[Path] = None, only: Sequence[str] = (),
             progress: bool = True) -> List[Dict[str, Any]]:
    archs = [a for a in spec.architectures if not only or a in only]
    plan = [(a, s) for a in archs for s in spec.sizes]
    rows = []
    for arch, size in tqdm(plan, desc=f"compare {spec.name}", unit="run", disable=not progress):
        tqdm.write(f"-- {arch} {size}: {spec.budget_s:g} device-seconds") if progress else None
        rows.append(run_one(spec, arch, size, registry, progress))
    out_dir = Path(out_dir or spec.runs_dir)
    write_results(rows, out_dir, spec)
    return rows


# -- reporting -----------------------------------------------------------------

def power_law(rows: List[Dict[str, Any]]) -> Optional[Dict[str, float]]:
    """Least-squares fit of bpb = a * C^(-b) over compute C, in log-log space."""
    pts = [(math.log(r["compute_flops"]), math.log(r["val_bpb"])) for r in rows if r.get("val_bpb")]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return {"a": math.exp(my - slope * mx), "b": -slope, "points": n}


def write_results(rows: List[Dict[str, Any]], out_dir: Path, spec: Spec) -> None:
    import csv
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fits = {a: power_law([r for r in rows if r["arch"] == a]) for a in dict.fromkeys(r["arch"] for r in rows)}
    lines = [f"# {spec.name}: equal compute, {spec.budget_s:g} device-seconds per run", "",
             f"Device: {rows[0]['device']}.", "",
             "| arch | size | params | tokens/s | steps | tokens | train PFLOP | state KiB | val bits/byte | val acc |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['size']} | {r['params']:,} | {r['tokens_per_s']:,.0f} | {r['steps']} | "
                     f"{r['tokens']:,} | {r['compute_flops'] / 1e15:.4f} | {r['state_bytes'] / 1024:.1f} | "
                     f"{_fmt(r['val_bpb'])} | {_fmt(r['val_accuracy'])} |")
    fitted = {a: f for a, f in fits.items() if f}
    if fitted:
        lines += ["", "Power-law fits, bits/byte = a * C^-b over training FLOPs C:", ""]
        lines += [f"- {a}: a = {f['a']:.4g}, b = {f['b']:.4f} ({f['points']} sizes)" for a, f in fitted.items()]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    plot(rows, fits, out_dir)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def plot(rows: List[Dict[str, Any]], fits: Dict[str, Any], out_dir: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        tqdm.write("zoo: matplotlib is not installed, so no plots (pip install 'zoo-core[compare]')")
        return
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    for x_key, fname, xlabel in (("compute_flops", "bpb_vs_compute.png", "training FLOPs"),
                                 ("params", "bpb_vs_params.png", "parameters")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for a in archs:
            pts = sorted((r[x_key], r["val_bpb"]) for r in rows if r["arch"] == a and r["val_bpb"])
            if pts:
                ax.plot(*zip(*pts), marker="o", label=a)
            if x_key == "compute_flops" and fits.get(a) and pts:
                f = fits[a]
                xs = [pts[0][0], pts[-1][0]]
                ax.plot(xs, [f["a"] * x ** -f["b"] for x in xs], linestyle="--", color=ax.lines[-1].get_color())
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation bits/byte")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        metrics = Path(r["run_dir"]) / "metrics.jsonl"
        if not metrics.exists():
            continue
        recs = [json.loads(l) for l in metrics.read_text().splitlines() if '"loss"' in l]
        ax.plot([x["tokens_seen"] for x in recs], [x["loss"] for x in recs], label=f"{r['arch']}-{r['size']}", lw=1)
    ax.set_xlabel("tokens")
    ax.set_ylabel("training loss (nats/token)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curves.png", dpi=120)
    plt.close(fig)
    if any(r.get("val_accuracy") is not None for r in rows) and any(r["state_bytes"] for r in rows):
        fig, ax = plt.subplots(figsize=(6, 4))
        for a in archs:
            pts = sorted((r["state_bytes"], r["val_accuracy"]) for r in rows if r["arch"] == a)
            ax.plot(*zip(*pts), marker="o", label=a)
        ax.set_xscale("log")
        ax.set_xlabel("decoding state (bytes per sequence)")
        ax.set_ylabel("validation accuracy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "accuracy_vs_state.png", dpi=120)
        plt.close(fig)
