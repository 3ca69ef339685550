"""metrics.jsonl, plus optional TensorBoard and wandb (offline works) mirrors.

Each optimizer-step record holds step, loss, accuracy, grad_norm, lr,
tokens_per_s, tokens_seen, peak_mem_mb (CUDA: max allocated; CPU: max RSS) and mfu
(where the peak is known: zoo_core/throughput.device_peak);
validation records hold val_* keys. Only rank 0 writes.
"""
from __future__ import annotations

import json
import resource
import sys
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
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = self.wandb = None
        if not enabled:
            return
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        # Both are optional (pip install 'zoo-core[logging]') and imported only when asked for.
        if cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("train.tensorboard=true needs TensorBoard: pip install 'zoo-core[logging]' "
                                "(or tensorboard), or set train.tensorboard=false") from None
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if cfg.train.wandb:
            try:
                import wandb
            except ImportError:
                raise UserError("train.wandb=true needs wandb: pip install 'zoo-core[logging]' (or wandb), "
                                "or set train.wandb=false; WANDB_MODE=offline needs no account") from None
            # One wandb run per zoo run: the id lives in the run directory, so a resume continues it.
            id_file = Path(run_dir) / "wandb-id.txt"
            if not id_file.exists():
                id_file.write_text(wandb.util.generate_id())
            self.wandb = wandb.init(project="zoo", name=cfg.name, id=id_file.read_text().strip(),
                                    dir=str(run_dir), resume="allow", config=_plain_config(cfg))

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(clean) + "\n")
        step = clean.get("step", 0)
        numbers = {k: v for k, v in clean.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records past the checkpoint so the log reads as one run."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))
