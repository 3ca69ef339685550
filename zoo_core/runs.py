"""Open a run directory for evaluation, generation and export, in one process."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import torch

from zoo_core import checkpoint
from zoo_core.components import build_tokenizer
from zoo_core.config import load_config, resolve
from zoo_core.distributed import pick_device
from zoo_core.errors import UserError
from zoo_core.interfaces import Tokenizer
from zoo_core.model import LanguageModel
from zoo_core.parallelize import use_cpu_linear
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


def load_run(path: str | Path, device: Any = "auto", overrides=(), dtype: Optional[torch.dtype] = None) -> Run:
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
    with torch.device("meta"):
        model = LanguageModel(cfg.model, registry, cfg.model.vocab_size)
    model.to_empty(device=dev)
    model.init_weights()
    checkpoint.load_model(latest, model)
    if dev.type == "cpu":
        use_cpu_linear(model, cfg.parallel.cpu_linear)
    if dtype is not None:
        model.to(dtype)
    model.eval()
    return Run(path, cfg, model, build_tokenizer(cfg, registry), latest)
