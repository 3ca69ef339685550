"""The core's standard pre-norm block: x + mixer(norm(x)), then x + mlp(norm(x))."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from zoo_core import hookimpl
from zoo_core.interfaces import Block, Mixer
from zoo_core.loop.layers import MLP_ACTS, RMSNorm, SwiGLU, swiglu_hidden  # noqa: F401  (public here: plugins use them)


@dataclass
class PreNormBlockConfig:
    #: Add a SwiGLU channel MLP; None follows the mixer's preference (`Mixer.wants_mlp`).
    mlp: bool | None = None
    #: SwiGLU hidden size as a multiple of dim (8/3 keeps the params of a 4x GeLU MLP).
    mlp_mult: float = 2.6667
    #: The MLP's hidden width exactly (overrides mlp_mult), e.g. an imported model's.
    mlp_hidden: int | None = None
    #: silu (SwiGLU) | gelu_tanh (GeGLU with tanh GeLU, as Griffin / RecurrentGemma).
    mlp_act: str = "silu"
    #: Biases on the MLP's projections (RecurrentGemma has them).
    mlp_bias: bool = False
    norm_eps: float = 1e-5


class PreNormBlock(Block):
    def __init__(self, dim: int, mixer: Mixer, config: PreNormBlockConfig, layer_idx: int, n_layers: int) -> None:
        super().__init__(dim, mixer, config, layer_idx, n_layers)
        self.mixer_norm = RMSNorm(dim, config.norm_eps)
        use_mlp = mixer.wants_mlp if config.mlp is None else config.mlp
        self.mlp_norm = RMSNorm(dim, config.norm_eps) if use_mlp else None
        hidden = config.mlp_hidden or swiglu_hidden(dim, config.mlp_mult)
        self.mlp = SwiGLU(dim, hidden, config.mlp_act, config.mlp_bias) if use_mlp else None

    def forward(self, x: Tensor, state: Any = None, return_state: bool = False, resets: Tensor | None = None):
        docs = {} if resets is None else {"resets": resets}  # a mixer without resets never sees the keyword
        y, state = self.mixer(self.mixer_norm(x), state, return_state=return_state, **docs)
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state

    def step(self, x: Tensor, state: Any, reset: Tensor | None = None):
        docs = {} if reset is None else {"reset": reset}
        y, state = self.mixer.step(self.mixer_norm(x), state, **docs)
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state

    def flops_per_token(self, seq_len: int) -> float:
        mlp = self.mlp.flops_per_token() if self.mlp is not None else 0.0
        return float(self.mixer.flops_per_token(seq_len)) + mlp


# -- the default plugin: registered through the same hook as any third-party block --------
zoo_api = 1


@hookimpl
def register_blocks(register):
    register(
        "prenorm", PreNormBlock, PreNormBlockConfig, "pre-norm residual block: RMSNorm, mixer, RMSNorm, SwiGLU MLP"
    )
