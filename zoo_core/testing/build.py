"""Build components the way the core does, plus small helpers shared by the checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from zoo_core.config import to_dataclass, validate_options
from zoo_core.interfaces import Mixer


def make_config(config_cls: type | None, options: dict | None = None, name: str = "?") -> Any:
    """The plugin's config object for `options`, validated as `zoo train` validates them."""
    if config_cls is None:
        if options:
            raise ValueError(f"'{name}' takes no options, got {sorted(options)}")
        return None
    resolved = validate_options("component", {"name": name, **(options or {})}, config_cls)
    return to_dataclass(resolved, config_cls)


@torch.no_grad()
def init_like_core(module: nn.Module) -> None:
    """`LanguageModel.init_weights`: every module's reset_parameters, children first."""
    for m in reversed(list(module.modules())):
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def materialise(build: Callable[[], nn.Module], dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """Build on the meta device, move to CPU, initialise: exactly what `build_model` does."""
    with torch.device("meta"):
        module = build()
    module.to_empty(device="cpu")
    torch.manual_seed(seed)
    init_like_core(module)
    return module.to(dtype)


def rel_err(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def max_abs(t: Tensor) -> float:
    return float(t.detach().abs().max()) if t.numel() else 0.0


def state_leaves(state: Any):
    return [t for t in tree_leaves(state) if isinstance(t, Tensor)]


def state_bytes(state: Any) -> int:
    return sum(t.numel() * t.element_size() for t in state_leaves(state))


def seq_forward(module: nn.Module, x: Tensor, state: Any = None, return_state: bool = False):
    """Call forward and check it returns the (y, state) pair the contract asks for."""
    out = module(x, state, return_state=return_state)
    assert isinstance(out, tuple) and len(out) == 2, f"forward must return (y, state), got {type(out).__name__}"
    return out


def step_through(module: nn.Module, x: Tensor, state: Any):
    """module.step over every position of x (batch, T, dim) from `state`: returns (y, last state).

    Checks each output's shape; plugin tests and benchmarks use it to compare step with forward.
    """
    outs = []
    for t in range(x.shape[1]):
        o, state = module.step(x[:, t], state)
        assert o.shape == x[:, t].shape, f"step output shape {tuple(o.shape)} != {tuple(x[:, t].shape)}"
        outs.append(o)
    return torch.stack(outs, 1), state


def config_equal(a: Any, b: Any) -> bool:
    return dataclasses.asdict(a) == dataclasses.asdict(b) if dataclasses.is_dataclass(a) else a == b


@dataclasses.dataclass
class ProbeConfig:
    #: Fixed decay of the probe's recurrence.
    decay: float = 0.9


class ProbeMixer(Mixer):
    """A tiny correct mixer (h_t = a h_{t-1} + W x_t, y = U h_t) that the kit puts
    inside blocks under test, and that the kit's own tests mutate into broken ones.
    It honours document resets (the decay is zero where a document starts)."""

    supports_resets = True

    def __init__(self, dim: int, config: ProbeConfig | None = None) -> None:
        super().__init__(dim, config or ProbeConfig())
        self.w_in = nn.Linear(dim, dim, bias=False)
        self.w_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, state: Any = None, return_state: bool = False, resets: Tensor | None = None):
        h = self.init_state(x.shape[0], x.device, x.dtype) if state is None else state
        u, ys = self.w_in(x), []
        for t in range(x.shape[1]):
            h = self._decay(h, None if resets is None else resets[:, t]) * h + u[:, t]
            ys.append(h)
        return self.w_out(torch.stack(ys, 1)), (h if return_state else None)

    def step(self, x: Tensor, state: Tensor, reset: Tensor | None = None):
        h = self._decay(state, reset) * state + self.w_in(x)
        return self.w_out(h), h

    def _decay(self, h: Tensor, reset: Tensor | None) -> Any:
        if reset is None:
            return self.config.decay
        return torch.where(reset[:, None], 0.0, self.config.decay).to(h.dtype)

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> Tensor:
        w = self.w_in.weight
        return torch.zeros(batch_size, self.dim, device=device or w.device, dtype=dtype or w.dtype)

    def flops_per_token(self, seq_len: int) -> float:
        return 4.0 * self.dim * self.dim + 2.0 * self.dim

    def state_size(self, seq_len: int) -> int:
        return self.dim * self.w_in.weight.element_size()
