"""Weights & Biases (train.wandb=true; WANDB_MODE=offline needs no account).

wandb writes under RUN/wandb (dir=RUN: its own offline-run-*/ or run-*/ folders); the wandb run id is kept in
RUN/wandb-id.txt, so a resumed zoo run continues the same wandb run. Keys are mirrored
under hierarchical names: `train/loss`, `train/lr`, `val/bpb` (`zoo_core.trackers.tag`)."""

from __future__ import annotations

import secrets
import string
from pathlib import Path
from typing import Any

from zoo_core.errors import UserError
from zoo_core.interfaces import Tracker
from zoo_core.trackers import tag


def _plain_config(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg


def new_id() -> str:
    """An 8-character wandb run id (lowercase letters and digits, as wandb makes its own);
    wandb.util.generate_id is gone from current wandb."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


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
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        if not run_id:
            run_id = new_id()
            id_file.write_text(run_id + "\n")
        # The mode (online, offline, disabled) is wandb's own: WANDB_MODE or `wandb offline`.
        self.run = wandb.init(
            project="zoo",
            name=cfg.name,
            id=run_id,
            dir=str(run_dir),  # wandb adds its own wandb/ folder
            resume="allow",
            config=_plain_config(cfg),
        )

    def log(self, numbers: dict[str, float], step: int) -> None:
        self.run.log({tag(k): v for k, v in numbers.items()}, step=step)

    def close(self) -> None:
        self.run.finish()
