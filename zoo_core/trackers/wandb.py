"""Weights & Biases (train.wandb=true; WANDB_MODE=offline needs no account)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo_core.errors import UserError
from zoo_core.interfaces import Tracker


def _plain_config(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg


class WandbTracker(Tracker):
    @classmethod
    def wanted(cls, cfg: Any) -> bool:
        return bool(getattr(cfg.train, "wandb", False))

    @classmethod
    def check(cls, cfg: Any) -> None:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError(
                "train.wandb=true needs wandb: pip install 'zoo-core[logging]' (or wandb), "
                "or set train.wandb=false; WANDB_MODE=offline needs no account"
            ) from None

    def __init__(self, run_dir: Path, cfg: Any, step: int) -> None:
        import wandb

        # One wandb run per zoo run: the id lives in the run directory, so a resume continues it.
        # wandb keeps the steps it has; records past the checkpoint are logged again under the
        # same step numbers, which wandb ignores (docs/guarantees.md).
        id_file = Path(run_dir) / "wandb-id.txt"
        if not id_file.exists():
            id_file.write_text(wandb.util.generate_id())
        self.run = wandb.init(
            project="zoo",
            name=cfg.name,
            id=id_file.read_text().strip(),
            dir=str(run_dir),
            resume="allow",
            config=_plain_config(cfg),
        )

    def log(self, numbers: dict[str, float], step: int) -> None:
        self.run.log(numbers, step=step)
