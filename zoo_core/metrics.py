"""metrics.jsonl, plus optional TensorBoard and wandb (offline works) mirrors.

Each optimizer-step record holds step, loss, accuracy, grad_norm, lr,
tokens_per_s, tokens_seen, peak_mem_mb (CUDA: max allocated; CPU: max RSS) and mfu
(where the peak is known: zoo_core/throughput.device_peak);
validation records hold val_* keys. Only rank 0 writes.

Exactly one record per logged step: `open(step)` cuts every log we own back to
the checkpoint's step before the run goes on (a torn last line, from a crash
or a full disk, is dropped with a one-line warning), and TensorBoard purges its
events past that step.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import warnings
from pathlib import Path
from typing import Any, Dict

import torch

from zoo_core.errors import UserError


def _plain_config(cfg: Any) -> Dict[str, Any]:
    from omegaconf import OmegaConf
    return OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg


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
        self.tb = self.wandb = None
        if not enabled:
            return
        # Both are optional (pip install 'zoo-core[logging]') and imported only when asked for.
        if cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError:
                raise UserError("train.tensorboard=true needs TensorBoard: pip install 'zoo-core[logging]' "
                                "(or tensorboard), or set train.tensorboard=false") from None
        if cfg.train.wandb:
            try:
                import wandb  # noqa: F401
            except ImportError:
                raise UserError("train.wandb=true needs wandb: pip install 'zoo-core[logging]' (or wandb), "
                                "or set train.wandb=false; WANDB_MODE=offline needs no account") from None

    def open(self, step: int) -> None:
        """Start logging after `step` (the checkpoint resumed from, 0 for a fresh start)."""
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.truncate_after(step)
        cfg, run_dir = self.cfg, self.run_dir
        if cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # purge_step: events a crashed run wrote past the checkpoint are dropped.
            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1 if step else None)
        if cfg.train.wandb:
            import wandb
            # One wandb run per zoo run: the id lives in the run directory, so a resume continues it.
            # wandb keeps the steps it has; records past the checkpoint are logged again under the
            # same step numbers, which wandb ignores (docs/guarantees.md).
            id_file = run_dir / "wandb-id.txt"
            if not id_file.exists():
                id_file.write_text(wandb.util.generate_id())
            self.wandb = wandb.init(project="zoo", name=cfg.name, id=id_file.read_text().strip(),
                                    dir=str(run_dir), resume="allow", config=_plain_config(cfg))

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        with self.path.open("a") as fh:  # one write per line: a crash tears at most the last one
            fh.write(json.dumps(clean) + "\n")
        step = clean.get("step", 0)
        numbers = {k: v for k, v in clean.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)

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
            warnings.warn(f"{self.path}: dropped {where}, which was not a whole JSON record "
                          f"(a crash or a full disk in the middle of a write)")
        if len(kept) == len(lines):
            return  # nothing to change: leave the file as it is
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
