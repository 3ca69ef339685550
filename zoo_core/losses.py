"""The core's next-token cross-entropy head, with tied or untied embeddings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.cpu_linear import linear
from zoo_core.interfaces import Head, HeadOutput

IGNORE = -100


@dataclass
class CrossEntropyConfig:
    #: Softcap logits with tanh (Gemma-style); 0 disables it.
    logit_softcap: float = 0.0


class CrossEntropyHead(Head):
    def __init__(self, dim: int, vocab_size: int, embedding: Optional[nn.Embedding], config: CrossEntropyConfig) -> None:
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
        logits = self.logits(h).float()
        flat_t = targets.reshape(-1)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), flat_t, ignore_index=IGNORE)
        mask = flat_t != IGNORE
        n = int(mask.sum())
        with torch.no_grad():
            correct = (logits.reshape(-1, logits.size(-1)).argmax(-1) == flat_t) & mask
            acc = correct.sum().float() / max(n, 1)
        return HeadOutput(loss=loss, n_tokens=n, metrics={"accuracy": acc})
