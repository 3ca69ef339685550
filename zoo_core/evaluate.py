"""Validation loss, perplexity and bits per byte (Languini's normalised perplexity).

bits/byte = (mean nats per token / ln 2) / (bytes per token), so models with
different tokenizers compare fairly. Training and `zoo eval` share this code.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch

from zoo_core.distributed import World
from zoo_core.interfaces import DataSource
from zoo_core.state import detach_state


@torch.no_grad()
def evaluate(model: torch.nn.Module, source: DataSource, world: World, n_batches: int,
             carry_state: bool = False, autocast: Optional[Any] = None) -> Dict[str, float]:
    """Mean loss over `n_batches` windows of every stream, streams split over ranks."""
    was_training = model.training
    model.eval()
    streams = list(range(world.rank, source.n_streams, world.size))
    totals = torch.zeros(3, dtype=torch.float64)  # nats, tokens, correct
    state = None
    for _ in range(n_batches):
        inputs, targets = source.batch(streams)
        inputs, targets = inputs.to(world.device), targets.to(world.device)
        with autocast() if autocast else _null():
            out, state = model(inputs, targets, state=state, return_state=carry_state)
        state = detach_state(state) if carry_state else None
        totals += torch.tensor([float(out.loss) * out.n_tokens, out.n_tokens,
                                float(out.metrics.get("accuracy", 0.0)) * out.n_tokens], dtype=torch.float64)
    world.all_reduce_sum(totals)
    model.train(was_training)
    nats, count, correct = totals.tolist()
    loss = nats / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)),
            "bpb": loss / math.log(2) / source.bytes_per_token, "accuracy": correct / max(count, 1),
            "tokens": int(count)}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
