"""Sampling from any architecture: prefill through the parallel path, decode through `step`.

The model's state is whatever its mixers keep (a KV cache for attention, h for
an RNN or SSM, both in a hybrid), so this file never asks which architecture it runs.

Prompts of different lengths share one batch: the common prefix is prefilled in
parallel, then every row steps one token at a time, feeding its own prompt
until it runs out and its samples after that. Each row draws from its own seeded
generator, and only when it samples, so a row of a batch computes and samples
exactly what it would alone. Finished rows leave the batch.

Documents (data.documents): a prompt is one document, and its prefill starts
from the fresh state (`init_state`). Under `reset` the prompt's first token is
also marked as a document start (`resets=`), as every document's first token
was in training: for most mixers that changes nothing, but a mixer whose reset
differs from a plain first token (Hawk's RecurrentGemma reset) then sees what it
was trained on. The mode is `generate(documents=...)`, else the model's
`documents` attribute (`load_run` sets it from the run's config), else stream.
A row ends at EOS, before a second document could begin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from zoo_core.state import select_rows


def sample_next(
    logits: Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> Tensor:
    """(B, V) logits -> (B,) token ids. temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(-1)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logits = logits / temperature
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


# -- stop strings -------------------------------------------------------------------------


def cut_at_stop(text: str, stop_strings: Sequence[str], keep: bool = True) -> tuple[str, bool]:
    """Text up to the first stop string (included if `keep`), and whether one was found."""
    hits = [(text.find(s), s) for s in stop_strings if s and s in text]
    if not hits:
        return text, False
    at, s = min(hits)
    return text[: at + len(s) if keep else at], True


class StopStrings:
    """`stop(row, new_ids)` that is true once the decoded new text holds a stop string.

    Only the tail is decoded: enough tokens for the longest stop string even if
    every character took four byte tokens. A hit in earlier text would already have
    stopped the row, so the tail is all that can hold a new one."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stop_strings: Sequence[str]) -> None:
        self.decode, self.strings = decode, [s for s in stop_strings if s]
        self.tail = 4 * max((len(s) for s in self.strings), default=0) + 4

    def __call__(self, row: int, ids: list[int]) -> bool:
        return bool(self.strings) and cut_at_stop(self.decode(ids[-self.tail :]), self.strings)[1]


# -- generation ---------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | Sequence[int] = 0,
    stop: Callable[[int, list[int]], bool] | None = None,
    on_token: Callable[[int, int], None] | None = None,
    eos_id: int | None = None,
    timings: dict[str, float] | None = None,
    documents: str | None = None,
) -> list[list[int]]:
    """Continue each prompt by up to `max_new_tokens` tokens.

    `seed` is one int (row r uses seed + r) or one seed per row, so a batch samples
    what the same prompts sample one by one with those seeds. A row ends at
    `eos_id` (kept in its output), or when `stop(row, new_ids)` is true (see
    `StopStrings`). `on_token(row, id)` sees every token as it is made, for
    streaming. `timings`, if given, receives prefill/decode seconds and token counts.
    """
    model.eval()
    device = next(model.parameters()).device
    B = len(prompts)
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (prepend BOS/EOS for an empty prompt)")
    seeds = [seed + r for r in range(B)] if isinstance(seed, int) else list(seed)
    if len(seeds) != B:
        raise ValueError(f"{len(seeds)} seeds for {B} prompts")
    out: list[list[int]] = [[] for _ in range(B)]
    if B == 0 or max_new_tokens <= 0:
        return out
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    t0 = time.perf_counter()
    prefix = min(len(p) for p in prompts)
    tokens = torch.tensor([list(p[:prefix]) for p in prompts], device=device)
    docs = {}
    if (documents or getattr(model, "documents", "stream")) == "reset":  # the prompt is one document
        docs["resets"] = torch.zeros(tokens.shape, dtype=torch.bool, device=device)
        docs["resets"][:, 0] = True
    logits, state = model.logits(tokens, return_state=True, **docs)
    logits = logits[:, -1]
    if timings is not None:
        _sync(device)
        t1 = time.perf_counter()
    pos = [prefix] * B
    active = list(range(B))  # rows still in the batch, in batch order
    stepped = 0
    while True:
        feed, keep = [], []
        greedy = logits.argmax(-1).tolist() if temperature <= 0 else None  # one op for the whole batch
        for i, r in enumerate(active):
            if pos[r] < len(prompts[r]):  # still reading its prompt
                feed.append(prompts[r][pos[r]])
                pos[r] += 1
                keep.append(i)
                continue
            tok = (
                greedy[i]
                if greedy is not None
                else int(sample_next(logits[i : i + 1], temperature, top_k, top_p, generators[r])[0])
            )
            out[r].append(tok)
            if on_token:
                on_token(r, tok)
            finished = (
                len(out[r]) >= max_new_tokens
                or (eos_id is not None and tok == eos_id)
                or (stop is not None and stop(r, out[r]))
            )
            if not finished:
                feed.append(tok)
                keep.append(i)
        if not keep:
            break
        if len(keep) < len(active):
            state = select_rows(state, torch.tensor(keep, device=device))
            active = [active[i] for i in keep]
        logits, state = model.step(torch.tensor(feed, device=device), state)
        stepped += len(feed)
    if timings is not None:
        _sync(device)
        t2 = time.perf_counter()
        timings.update(
            prefill_s=t1 - t0,
            decode_s=t2 - t1,
            prefill_tokens=B * prefix,
            step_tokens=stepped,
            new_tokens=sum(len(o) for o in out),
        )
    return out
