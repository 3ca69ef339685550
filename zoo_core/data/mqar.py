"""Multi-query associative recall (MQAR), in the format of Arora et al. 2023, "Zoology".

A window of `seq_len` input tokens is `num_kv_pairs` key-value pairs
(k1 v1 k2 v2 ...), then a query region that holds keys only: each key appears
once more, and the target at that position is its value. The value itself is
never written after the context, so no answer is visible in the inputs after
it is scored; the positions between queries hold a filler token that is never
a key or a value. Keys come from [1, vocab/2) and values from [vocab/2, vocab),
distinct within a window. Query gaps follow Zoology's power law: gap g (in
pairs of positions, g = 0, 1, ...) has probability proportional to
(g+1)^(power_a - 1), so small `power_a` puts queries close to the start of the
query region. Only query positions have targets (the rest are -100), so the
loss head's accuracy is recall accuracy, and chance is 1/num_kv_pairs.

The vocabulary is the source's own (`vocab`, 8192 as in Zoology), independent
of the text tokenizer: the model's embedding covers max(tokenizer, source)
(`declared_vocab`). Windows are a pure function of (seed, split, stream, window
index), so they do not depend on which rank draws them, and resume is exact.
Each window is one example and one document (data.documents=reset starts every
window from a fresh state).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from zoo_core.data.windows import Row, WindowSource
from zoo_core.errors import UserError
from zoo_core.interfaces import IGNORE_INDEX, Tokenizer


@dataclass
class MQARConfig:
    #: Synthetic token ids: keys in [1, vocab/2), values in [vocab/2, vocab).
    vocab: int = 8192
    num_kv_pairs: int = 8
    #: Zoology's query-gap power law: P(gap g) ~ (g+1)^(power_a - 1); 1 is uniform.
    power_a: float = 0.01
    #: Id of the filler token between queries: 0, or an id >= vocab (never a key or a value).
    filler: int = 0
    #: Fill the query region with random tokens instead: keys that are not this window's keys
    #: (never a value, never one of the window's keys), as Zoology's random_non_queries.
    random_filler: bool = False


def _check(config: MQARConfig, seq_len: int) -> None:
    n, half = config.num_kv_pairs, config.vocab // 2
    if n < 1 or half - 1 < n:
        raise UserError(f"mqar needs 1 <= num_kv_pairs <= vocab/2 - 1 (got {n} with vocab {config.vocab})")
    if seq_len < 4 * n:
        raise UserError(
            f"mqar with {n} pairs needs data.seq_len >= {4 * n} (got {seq_len}); "
            f"raise data.seq_len or lower data.source.num_kv_pairs"
        )
    if 0 < config.filler < config.vocab:
        raise UserError(
            f"mqar filler={config.filler} is a key or value id (1..{config.vocab - 1}); use 0 or an id >= vocab"
        )
    if config.random_filler and half - 1 - n < 1:
        raise UserError(f"mqar random_filler needs spare key ids: raise data.source.vocab above {2 * (n + 2)}")
    if config.power_a <= 0:
        raise UserError(f"mqar power_a must be > 0 (got {config.power_a}); Zoology uses 0.01")


class MQARSource(WindowSource):
    bytes_per_token = 1.0  # synthetic tokens: read accuracy, not bits/byte
    reports_documents = True

    @staticmethod
    def declared_vocab(config: MQARConfig) -> int:
        """Token ids this source emits are < this (the model's embedding must cover it)."""
        return max(config.vocab, config.filler + 1)

    def open(self, config: MQARConfig, tokenizer: Tokenizer | None, split: str, cache_dir: str | None, progress: bool):
        _check(config, self.seq_len)
        self.config = config
        self.vocab_size = self.declared_vocab(config)
        self.salt = f"{self.seed}:{split}"
        slots = (self.seq_len - 2 * config.num_kv_pairs) // 2
        gaps = torch.arange(1, slots + 1, dtype=torch.float64)
        self.gap_p = gaps ** (config.power_a - 1)  # Zoology: power_a * g^(power_a-1), normalised

    def window(self, stream: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (seq_len,), for window k of a stream."""
        cfg, T = self.config, self.seq_len
        digest = hashlib.sha256(f"{self.salt}:{stream}:{k}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        n, half = cfg.num_kv_pairs, cfg.vocab // 2
        key_perm = torch.randperm(half - 1, generator=g) + 1
        keys = key_perm[:n]
        values = torch.randperm(cfg.vocab - half, generator=g)[:n] + half
        inputs = torch.full((T,), cfg.filler, dtype=torch.long)
        inputs[0 : 2 * n : 2], inputs[1 : 2 * n : 2] = keys, values
        # Key i is queried at gap i (drawn without replacement from the power law); only keys are written.
        gaps = torch.multinomial(self.gap_p, n, replacement=False, generator=g)
        where = 2 * n + 2 * gaps
        if cfg.random_filler:
            spare = key_perm[n:]
            inputs[2 * n :] = spare[torch.randint(len(spare), (T - 2 * n,), generator=g)]
        inputs[where] = keys
        targets = torch.full((T,), IGNORE_INDEX, dtype=torch.long)
        targets[where] = values
        return inputs, targets

    def row(self, stream: int, k: int) -> Row:
        inputs, targets = self.window(stream, k)
        starts = torch.zeros(self.seq_len, dtype=torch.bool)
        starts[0] = True  # one example, one document
        return inputs, targets, starts

    def state_dict(self) -> dict[str, Any]:
        return {"position": list(self.position), "n_streams": self.n_streams}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n_streams"] != self.n_streams:
            raise UserError(
                f"checkpointed mqar state has {state['n_streams']} streams, this run "
                f"{self.n_streams}; keep train.global_batch when resuming"
            )
        self.position = list(state["position"])
