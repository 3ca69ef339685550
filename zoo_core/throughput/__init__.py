"""Training throughput on this hardware (Languini's first step toward equal-compute comparisons).

Random tokens; forward + backward + optimizer step; warm-up steps first, then
the median of repeated timed steps. FLOPs per token come from the mixers' own
counts (training = 3 x forward); MFU is reported against the device's peak:
a GPU's datasheet dense bf16 figure where it is known, a CPU's measured GEMM
peak in the step's dtype (zoo_core/loop/cpu/peak.py). Under data.documents=reset
the step takes document starts too (one every DOCUMENT_TOKENS tokens), so that a
compare time budget counts the steps a reset run can take.
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from zoo_core.config import layer_mixers
from zoo_core.loop.components import build_tokenizer, model_vocab
from zoo_core.loop.hardware import PEAK_FLOPS, compute_dtype, device_peak  # noqa: F401  (public here too)
from zoo_core.loop.metrics import peak_memory_mb
from zoo_core.loop.model import build_model
from zoo_core.loop.optim import build_optimizer
from zoo_core.loop.parallelize import use_cpu_linear, warn_cpu_bf16


@dataclasses.dataclass
class Throughput:
    tokens_per_s: float
    step_s: float
    micro_batch: int
    seq_len: int
    params: int
    flops_per_token: float  # training FLOPs per token (3 x forward)
    mfu: float | None
    peak_mem_mb: float
    device: str

    def row(self, cfg: Any) -> dict[str, Any]:
        mixers = sorted({m["name"] for m in layer_mixers(cfg.model)})
        return {
            "name": cfg.name,
            "mixers": "+".join(mixers),
            "dim": cfg.model.dim,
            "n_layers": cfg.model.n_layers,
            **dataclasses.asdict(self),
        }


#: Under data.documents=reset the timed batch starts a document this often (a mid-length document).
DOCUMENT_TOKENS = 128


def measure(
    cfg: Any, registry: Any, micro_batch: int, warmup: int = 3, repeats: int = 10, device: torch.device | None = None
) -> Throughput:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    vocab = model_vocab(cfg, registry, build_tokenizer(cfg, registry))
    model = build_model(cfg, registry, vocab, device)
    if device.type == "cpu":
        use_cpu_linear(model, cfg.parallel.cpu_linear)
        if cfg.parallel.mixed_precision == "bf16":
            warn_cpu_bf16()
    model.train()
    optimizer = build_optimizer(model, cfg.optim)
    T = cfg.data.seq_len
    tokens = torch.randint(0, vocab, (micro_batch, T + 1), device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    docs = {}
    if cfg.data.documents == "reset":  # the mask/gate work a reset run does; stream never passes resets
        docs["resets"] = (torch.arange(T, device=device) % DOCUMENT_TOKENS == 0).expand(micro_batch, T)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if cfg.parallel.mixed_precision == "bf16"
        else torch.autocast(device.type, enabled=False)
    )
    times: list[float] = []
    for i in range(warmup + repeats):
        _sync(device)
        start = time.perf_counter()
        with autocast:
            out, _ = model(inputs, targets, **docs)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    tps = micro_batch * T / step
    flops = 3.0 * model.flops_per_token(T)
    peak = device_peak(device, compute_dtype(cfg))
    return Throughput(
        tps,
        step,
        micro_batch,
        T,
        model.num_params(),
        flops,
        flops * tps / peak if peak else None,
        peak_memory_mb(device),
        _device_name(device),
    )


def sweep(
    cfg: Any, registry: Any, start: int = 1, limit: int = 4096, max_mem_fraction: float = 0.8, **kw
) -> list[Throughput]:
    """Double the micro-batch until it no longer fits (CUDA OOM, or on CPU the
    resident memory passing `max_mem_fraction` of the machine's)."""
    results = []
    batch = start
    while batch <= limit:
        try:
            result = measure(cfg, registry, batch, **kw)
        except torch.cuda.OutOfMemoryError:
            break
        results.append(result)
        if result.device == "cpu" and result.peak_mem_mb > max_mem_fraction * _total_memory_mb():
            break
        batch *= 2
    return results


def append_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu x{torch.get_num_threads()} threads"


def _total_memory_mb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    return float("inf")
