"""TensorBoard (train.tensorboard=true): events under RUN/tensorboard, tags `train/loss`,
`train/lr`, `val/bpb`, ... (`zoo_core.trackers.tag`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo_core.errors import UserError
from zoo_core.interfaces import Tracker
from zoo_core.trackers import tag


class TensorBoardTracker(Tracker):
    @classmethod
    def wanted(cls, cfg: Any) -> bool:
        return bool(getattr(cfg.train, "tensorboard", False))

    @classmethod
    def check(cls, cfg: Any) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise UserError(
                "train.tensorboard=true needs TensorBoard: pip install 'zoo-core[logging]' "
                "(or tensorboard), or set train.tensorboard=false"
            ) from None

    def __init__(self, run_dir: Path, cfg: Any, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events a crashed run wrote past the checkpoint are dropped.
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=step + 1 if step else None)

    def log(self, numbers: dict[str, float], step: int) -> None:
        for k, v in numbers.items():
            self.writer.add_scalar(tag(k), v, step)

    def close(self) -> None:
        self.writer.close()
