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


#: What a run directory may hold before its config.yaml is written (a run killed before it
#: started, `zoo compare`'s measurement, a tracker's files): anything else is not a run's.
RUN_ENTRIES = frozenset(
    {
        "config.yaml",
        "metrics.jsonl",
        "checkpoints",
        "samples",
        "code",
        "slurm",
        "tokenizer.json",
        "throughput.json",
        "compare.json",
        "tensorboard",
        "wandb",
        "wandb-id.txt",
        "export",
        "hf",
    }
)


def check_run_dir(run_dir: str | Path) -> None:
    """Refuse, before anything is written, a run directory that cannot be one: a file in its
    place (or in place of a folder above it), or an existing directory holding things that are
    no run's (training would mix its files in with them)."""
    run_dir = Path(run_dir)
    fix = "give the run another name= (or runs_dir=), or move it away"
    for path in [run_dir, *run_dir.parents]:
        if path.exists() and not path.is_dir():
            where = "in place of the run directory" if path == run_dir else f"on the way to the run directory {run_dir}"
            raise UserError(f"'{path}' is a file {where}; {fix}")
    if not run_dir.is_dir() or (run_dir / "config.yaml").is_file():
        return
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES and not p.name.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(f"'{run_dir}' exists and is not a run directory (no config.yaml; it holds {shown}); {fix}")


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
    model.documents = cfg.data.documents  # generate() reads it: under reset a prompt starts a document
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
