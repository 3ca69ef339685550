"""What Mamba and Mamba-2 share as mixers: no MLP after them, document resets on every path,
the option checks of `__init__`, and the start of a forward (its path and incoming states)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from zoo_core.interfaces import Mixer
from zoo_mamba import paths
from zoo_mamba.common import check_backend, check_dt_range


class MambaMixer(Mixer):
    wants_mlp = False  # Mamba stacks mixers only; model.block.mlp=true adds an MLP
    supports_resets = True  # forward(resets=) and step(reset=) on every path (paths.py)
    #: Mamba-2's SSD scan (else Mamba's selective scan), for `paths.pick`.
    ssd = False

    def __init__(self, name: str, dim: int, config: Any) -> None:
        super().__init__(dim, config)
        check_backend(name, config.backend)
        check_dt_range(name, config.dt_min, config.dt_max, config.dt_init_floor)

    def _begin(
        self, x: Tensor, state: dict[str, Tensor] | None, return_state: bool, resets: Tensor | None
    ) -> tuple[paths.Path, Tensor | None, Tensor | None]:
        """The path of this forward and the incoming conv and SSM states (None from the start)."""
        carried = state is not None
        path = paths.pick(self.config.backend, x, self.ssd, carried, return_state, resets=resets is not None)
        return (path, None, None) if state is None else (path, state["conv"], state["ssm"])
