"""Open a run directory for evaluation, generation and export, in one process."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from zoo_core.config import load_config, resolve
from zoo_core.errors import UserError
from zoo_core.interfaces import Tokenizer
from zoo_core.loop import checkpoint
from zoo_core.loop.components import build_tokenizer
from zoo_core.loop.distributed import pick_device
from zoo_core.loop.model import LanguageModel, build_model
from zoo_core.loop.parallelize import use_cpu_linear
from zoo_core.registry import get_registry


@dataclasses.dataclass
class Run:
    path: Path
    cfg: Any
    model: LanguageModel
    tokenizer: Tokenizer
    checkpoint: Path

    @property
    def step(self) -> int:
        """The training step of the loaded checkpoint (from its step-XXXXXXXX name)."""
        return int(self.checkpoint.name.rsplit("-", 1)[-1])


def load_run(path: str | Path, device: Any = "auto", overrides=(), dtype: torch.dtype | None = None) -> Run:
    """The run's config and its latest checkpoint's weights, whatever world size wrote them.
    `device` is a name (auto, cpu, cuda) or a torch.device (each rank passes its own)."""
    path = Path(path)
    if not (path / "config.yaml").exists():
        raise UserError(f"'{path}' is not a run directory (no config.yaml); runs live in runs/<name>")
    latest = checkpoint.latest(path / "checkpoints")
    if latest is None:
        raise UserError(f"run '{path}' has no checkpoint yet; train it first (zoo train {path})")
    registry = get_registry()
    cfg = resolve(load_config(str(path / "config.yaml"), overrides), registry)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model = build_model(cfg, registry, cfg.model.vocab_size, dev)
    checkpoint.load_model(latest, model)
    if dev.type == "cpu":
        use_cpu_linear(model, cfg.parallel.cpu_linear)
    if dtype is not None:
        model.to(dtype)
    model.eval()
    return Run(path, cfg, model, build_tokenizer(cfg, registry), latest)


def export(run_dir: Path, out_dir: Path | None = None, dtype: torch.dtype | None = None) -> Path:
    """One consolidated `model.safetensors` plus `config.yaml` from a run's latest
    checkpoint, whatever number of ranks wrote it. Load it with
    `LanguageModel(...).load_state_dict(safetensors.torch.load_file(path))`."""
    run = load_run(run_dir, device="cpu")
    out_dir = Path(out_dir) if out_dir else Path(run_dir) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().clone()
        for k, v in run.model.state_dict().items()
    }
    step = checkpoint.read_meta(run.checkpoint).get("step")
    tmp = out_dir / ".model.safetensors.tmp"
    save_file(
        weights, str(tmp), metadata={"format": "pt", "zoo_step": str(step), "zoo_checkpoint": run.checkpoint.name}
    )
    os.replace(tmp, out_dir / "model.safetensors")
    shutil.copyfile(Path(run_dir) / "config.yaml", out_dir / "config.yaml")
    return out_dir / "model.safetensors"
