"""The core's next-token cross-entropy head, with tied or untied embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core import hookimpl
from zoo_core.interfaces import IGNORE_INDEX, Head, HeadOutput
from zoo_core.loop.cpu.linear import linear

IGNORE = IGNORE_INDEX  # kept: the name this module has always had


@dataclass
class CrossEntropyConfig:
    #: Softcap logits with tanh (Gemma-style); 0 disables it.
    logit_softcap: float = 0.0


class CrossEntropyHead(Head):
    def __init__(self, dim: int, vocab_size: int, embedding: nn.Embedding | None, config: CrossEntropyConfig) -> None:
        super().__init__(dim, vocab_size, embedding, config)
        # Tied: reuse the embedding matrix (a plain attribute, so it is not
        # registered twice and FSDP shards it once, with the embedding).
        object.__setattr__(self, "_tied", embedding)
        self.proj = None if embedding is not None else nn.Linear(dim, vocab_size, bias=False)

    @property
    def weight(self) -> Tensor:
        return self._tied.weight if self._tied is not None else self.proj.weight

    def logits(self, h: Tensor) -> Tensor:
        logits = linear(h, self.weight)
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap else logits

    def forward(self, h: Tensor, targets: Tensor) -> HeadOutput:
        flat_h, flat_t = h.reshape(-1, h.size(-1)), targets.reshape(-1)
        mask = flat_t != IGNORE
        n = int(mask.sum())
        if 0 < n < flat_t.numel():
            # Sparse targets (a recall task scores a few positions per window): unembed only those.
            # The loss and accuracy are the same; the vocab-sized matmul shrinks by the sparsity.
            flat_h, flat_t, mask = flat_h[mask], flat_t[mask], mask[mask]
        logits = self.logits(flat_h).float()
        loss = F.cross_entropy(logits, flat_t, ignore_index=IGNORE)
        with torch.no_grad():
            correct = (logits.argmax(-1) == flat_t) & mask
            acc = correct.sum().float() / max(n, 1)
        return HeadOutput(loss=loss, n_tokens=n, metrics={"accuracy": acc})


# -- the default plugin: registered through the same hook as any third-party loss ---------
zoo_api = 1


@hookimpl
def register_losses(register):
    register(
        "cross_entropy", CrossEntropyHead, CrossEntropyConfig, "next-token cross-entropy, tied or untied unembedding"
    )
