"""Process-group setup under torchrun (gloo on CPU, NCCL on GPU), and the few
collectives the loop needs. A plain process is world 1 and every call is a no-op."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's value on every rank: decisions that must agree (which checkpoint
        to resume, whether to save) are taken once, so no rank can diverge and hang."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(requested)


def init_world(device: str = "auto") -> World:
    """Join torchrun's process group when launched by it; a plain process is world 1."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return World(device=pick_device(device))
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = pick_device(device, local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", **({"device_id": dev} if dev.type == "cuda" else {})
        )
    return World(rank, size, local_rank, dev)


def close_world() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


from zoo_core.errors import STATUS_ENV  # noqa: E402,F401  (defined in the contracts: the launcher must not import torch)
