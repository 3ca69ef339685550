"""metrics.jsonl, plus the registered trackers (`register_trackers`: the core's TensorBoard
and wandb, offline works) as mirrors.

Each optimizer-step record holds step, loss, accuracy, grad_norm, lr,
tokens_per_s, tokens_seen, peak_mem_mb (CUDA: max allocated; CPU: max RSS) and mfu
(where the peak is known: zoo_core/loop/hardware.device_peak);
validation records hold val_* keys. Only rank 0 writes.

Exactly one record per logged step: `open(step)` cuts every log we own back to
the checkpoint's step before the run goes on (a torn last line, from a crash
or a full disk, is dropped with a one-line warning), and each tracker is told that step
(TensorBoard purges its events past it).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import warnings
from pathlib import Path
from typing import Any

import torch


def _wanted_trackers(cfg: Any) -> list[type]:
    """The registered trackers this run asks for (in name order)."""
    from zoo_core.registry import get_registry

    return [e.factory for e in get_registry().entries("trackers") if e.factory.wanted(cfg)]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


class MetricsLog:
    def __init__(self, run_dir: Path, cfg: Any, enabled: bool) -> None:
        """Checks that the trackers asked for are installed; writes nothing until `open`."""
        self.enabled, self.cfg, self.run_dir = enabled, cfg, Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.trackers: list[Any] = []
        self._tracker_classes = [] if not enabled else _wanted_trackers(cfg)
        for cls in self._tracker_classes:  # a missing library is one line, before any training
            cls.check(cfg)

    def open(self, step: int) -> None:
        """Start logging after `step` (the checkpoint resumed from, 0 for a fresh start)."""
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.truncate_after(step)
        self.trackers = [cls(self.run_dir, self.cfg, step) for cls in self._tracker_classes]

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        with self.path.open("a") as fh:  # one write per line: a crash tears at most the last one
            fh.write(json.dumps(clean) + "\n")
        step = clean.get("step", 0)
        numbers = {k: v for k, v in clean.items() if isinstance(v, (int, float)) and k != "step"}
        for tracker in self.trackers:
            tracker.log(numbers, step)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` so the log reads as one run; rewritten atomically."""
        if not self.enabled or not self.path.exists():
            return
        kept, torn = [], []
        lines = self.path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError
            except ValueError:
                torn.append(i + 1)
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        if torn:
            where = "its last line" if torn == [len(lines)] else f"line(s) {', '.join(map(str, torn[:5]))}"
            warnings.warn(
                f"{self.path}: dropped {where}, which was not a whole JSON record "
                f"(a crash or a full disk in the middle of a write)",
                stacklevel=2,
            )
        if len(kept) == len(lines):
            return  # nothing to change: leave the file as it is
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
