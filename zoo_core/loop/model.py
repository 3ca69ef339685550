"""The language model every architecture shares: embedding, blocks, norm, head.

It knows architectures only through the registry: each layer's mixer, the
block and the head are looked up by name and built from their config dataclass.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from zoo_core.config import layer_mixers, to_dataclass
from zoo_core.interfaces import HeadOutput
from zoo_core.loop.layers import RMSNorm


class LanguageModel(nn.Module):
    def __init__(self, model_cfg: Any, registry: Any, vocab_size: int) -> None:
        super().__init__()
        self.dim, self.vocab_size = model_cfg.dim, vocab_size
        self.init_std = model_cfg.init_std
        self.embed = nn.Embedding(vocab_size, model_cfg.dim)
        block_opts = dict(model_cfg.block)
        block_entry = registry.get("blocks", block_opts["name"])
        layers = []
        for i, mixer_opts in enumerate(layer_mixers(model_cfg)):
            entry = registry.get("mixers", mixer_opts["name"])
            mixer = entry.factory(model_cfg.dim, to_dataclass(mixer_opts, entry.config_cls))
            layers.append(
                block_entry.factory(
                    model_cfg.dim, mixer, to_dataclass(block_opts, block_entry.config_cls), i, model_cfg.n_layers
                )
            )
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(model_cfg.dim, model_cfg.norm_eps)
        loss_opts = dict(model_cfg.loss)
        loss_entry = registry.get("losses", loss_opts["name"])
        tied = self.embed if model_cfg.tie_embeddings else None
        self.head = loss_entry.factory(model_cfg.dim, vocab_size, tied, to_dataclass(loss_opts, loss_entry.config_cls))

    # -- initialisation (after meta-device materialisation) --------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        # Children before parents, so a mixer's own reset_parameters (custom
        # decays, dt biases) runs after its Linear layers' defaults.
        for module in reversed(list(self.modules())):
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        nn.init.normal_(self.embed.weight, std=self.init_std)
        # GPT-2 style: scale residual output projections by depth.
        for block in self.layers:
            mlp = getattr(block, "mlp", None)
            if mlp is not None and hasattr(mlp, "w_out"):
                mlp.w_out.weight.mul_(1.0 / math.sqrt(2 * len(self.layers)))

    # -- forward ---------------------------------------------------------------
    def hidden(
        self,
        tokens: Tensor,
        state: list[Any] | None = None,
        return_state: bool = False,
        resets: Tensor | None = None,
    ) -> tuple[Tensor, list[Any] | None]:
        """`resets` (batch, time) bool, data.documents=reset: True where a document starts (see `Mixer`)."""
        x = self.embed(tokens)
        new_state = [] if return_state else None
        docs = {} if resets is None else {"resets": resets}  # stream mode: blocks never see the keyword
        for i, layer in enumerate(self.layers):
            x, s = layer(x, None if state is None else state[i], return_state=return_state, **docs)
            if return_state:
                new_state.append(s)
        return self.norm(x), new_state

    def forward(
        self,
        tokens: Tensor,
        targets: Tensor,
        state: list[Any] | None = None,
        return_state: bool = False,
        backward_scale: float | None = None,
        resets: Tensor | None = None,
    ) -> tuple[HeadOutput, list[Any] | None]:
        """`backward_scale` (training only): a `custom_backward` head runs its own backward
        of loss * backward_scale here, inside forward so that FSDP still has the root's
        parameters gathered, and `out.trunk_grad` = (h, dloss/dh) is left for the loop."""
        h, new_state = self.hidden(tokens, state, return_state, resets)
        if backward_scale is not None and self.head.custom_backward and torch.is_grad_enabled():
            leaf = h.detach().requires_grad_()
            out = self.head.forward_backward(leaf, targets, backward_scale)
            out.trunk_grad = (h, leaf.grad)
            return out, new_state
        return self.head(h, targets), new_state

    def logits(
        self,
        tokens: Tensor,
        state: list[Any] | None = None,
        return_state: bool = False,
        resets: Tensor | None = None,
    ):
        h, new_state = self.hidden(tokens, state, return_state, resets)
        return self.head.logits(h), new_state

    def step(self, token: Tensor, state: list[Any], reset: Tensor | None = None) -> tuple[Tensor, list[Any]]:
        """One token per row: token (B,) -> next-token logits (B, vocab); `reset` (B,) bool: a document starts."""
        x = self.embed(token)
        new_state = []
        docs = {} if reset is None else {"reset": reset}
        for i, layer in enumerate(self.layers):
            x, s = layer.step(x, state[i], **docs)
            new_state.append(s)
        return self.head.logits(self.norm(x)), new_state

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> list[Any]:
        return [layer.init_state(batch_size, device, dtype) for layer in self.layers]

    # -- accounting --------------------------------------------------------------
    def num_params(self, embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if embedding else n - self.embed.weight.numel()

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token, from each block's (and so each mixer's) own count."""
        return sum(layer.flops_per_token(seq_len) for layer in self.layers) + self.head.flops_per_token()

    def state_size(self, seq_len: int) -> int:
        return sum(layer.state_size(seq_len) for layer in self.layers)


def meta_model(model_cfg: Any, registry: Any, vocab_size: int) -> LanguageModel:
    """The one build on the meta device: shapes and counts, no memory. `build_model`,
    the loop's sharded start, `count_params` and compare's FLOP count all start here."""
    with torch.device("meta"):
        return LanguageModel(model_cfg, registry, vocab_size)


def build_model(cfg: Any, registry: Any, vocab_size: int, device: Any = "cpu") -> LanguageModel:
    """Build on the meta device, materialise on `device`, then initialise."""
    model = meta_model(cfg.model, registry, vocab_size)
    model.to_empty(device=device)
    model.init_weights()
    return model


def padded_vocab(tokenizer_vocab: int, multiple: int = 8) -> int:
    return multiple * math.ceil(tokenizer_vocab / multiple)
