"""Sampling from any architecture: prefill through the parallel path, decode through `step`.

Prompts of different lengths share one batch: the common prefix is prefilled in
parallel, then every row steps one token at a time, feeding its own prompt
until it runs out and its samples after that. Each row thus sees exactly the
computation it would see alone.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor


def sample_next(logits: Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator) -> Tensor:
    """(B, V) logits -> (B,) token ids. temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: torch.nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
             stop: Optional[Callable[[int, List[int]], bool]] = None,
             on_token: Optional[Callable[[int, int], None]] = None) -> List[List[int]]:
    """Continue each prompt by up to `max_new_tokens`. `stop(row, new_ids)` ends a row early;
    `on_token(row, id)` sees every sampled token as it is made (for streaming)."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    B = len(prompts)
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (prepend BOS for an empty prompt)")
    prefix = min(len(p) for p in prompts)
    tokens = torch.tensor([list(p[:prefix]) for p in prompts], device=device)
    logits, state = model.logits(tokens, return_state=True)
    logits = logits[:, -1]
    pos = [prefix] * B
    out: List[List[int]] = [[] for _ in range(B)]
    done = [False] * B
    while not all(done):
        sampled = sample_next(logits, temperature, top_k, top_p, generator)
        feed = []
        for r in range(B):
            if pos[r] < len(prompts[r]):  # still reading its prompt
                feed.append(prompts[r][pos[r]])
                pos[r] += 1
                continue
            tok = int(sampled[r])
            if not done[r]:
                out[r].append(tok)
                if on_token:
                    on_token(r, tok)
                if len(out[r]) >= max_new_tokens or (stop is not None and stop(r, out[r])):
                    done[r] = True
            feed.append(tok)
        if all(done):
            break
        logits, state = model.step(torch.tensor(feed, device=device), state)
    return out
