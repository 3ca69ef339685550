"""Multi-query associative recall (MQAR), after Arora et al. 2023, "Zoology".

Each window holds `num_kv_pairs` key-value pairs (keys from the lower half of
the vocabulary, values from the upper half), then a query region in which every
key appears once more at a random position; the model must predict its value
there. Only those positions have targets (the rest are -100), so the loss
head's accuracy is recall accuracy. Architectures can then be compared on
recall against the state they keep (`zoo compare` reports `state_size`).

Windows are a pure function of (seed, split, stream, window index), so they do
not depend on which rank draws them, and resume is exact.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from zoo_core.errors import UserError
from zoo_core.interfaces import DataSource, Tokenizer

IGNORE = -100


@dataclass
class MQARConfig:
    #: Token ids used (keys in [1, vocab/2), values in [vocab/2, vocab)); at most the tokenizer's vocabulary.
    vocab: int = 256
    num_kv_pairs: int = 8
    #: Id of the filler token between queries.
    filler: int = 0


class MQARSource(DataSource):
    bytes_per_token = 1.0  # synthetic tokens: read accuracy, not bits/byte

    def __init__(self, config: MQARConfig, *, tokenizer: Tokenizer, split: str, seq_len: int, n_streams: int,
                 seed: int = 0, cache_dir: Optional[str] = None, progress: bool = True) -> None:
        if config.vocab > tokenizer.vocab_size:
            raise UserError(f"mqar vocab={config.vocab} exceeds the tokenizer's {tokenizer.vocab_size}; "
                            f"lower data.source.vocab")
        n = config.num_kv_pairs
        if n < 1 or config.vocab // 2 - 1 < n:
            raise UserError(f"mqar needs 1 <= num_kv_pairs <= vocab/2 - 1 (got {n} with vocab {config.vocab})")
        if seq_len + 1 < 4 * n:
            raise UserError(f"mqar with {n} pairs needs data.seq_len >= {4 * n - 1} (got {seq_len}); "
                            f"raise data.seq_len or lower data.source.num_kv_pairs")
        self.config, self.seq_len, self.n_streams = config, seq_len, n_streams
        self.salt = f"{seed}:{split}"
        self.position = [0] * n_streams

    def window(self, stream: int, k: int) -> torch.Tensor:
        """(seq_len + 1,) tokens and the matching target mask for window k of a stream."""
        cfg, L = self.config, self.seq_len + 1
        digest = hashlib.sha256(f"{self.salt}:{stream}:{k}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        n, half = cfg.num_kv_pairs, cfg.vocab // 2
        keys = torch.randperm(half - 1, generator=g)[:n] + 1
        values = torch.randint(half, cfg.vocab, (n,), generator=g)
        seq = torch.full((L,), cfg.filler, dtype=torch.long)
        seq[0:2 * n:2], seq[1:2 * n:2] = keys, values
        # Each key is queried once, at a random slot of the query region; its value follows it.
        slots = (L - 2 * n) // 2
        where = 2 * n + 2 * torch.randperm(slots, generator=g)[:n]
        order = torch.randperm(n, generator=g)
        seq[where], seq[where + 1] = keys[order], values[order]
        answer = torch.zeros(L, dtype=torch.bool)
        answer[where + 1] = True
        return seq, answer

    def batch(self, stream_ids: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = [], []
        for s in stream_ids:
            seq, answer = self.window(s, self.position[s])
            self.position[s] += 1
            inputs.append(seq[:-1])
            targets.append(torch.where(answer[1:], seq[1:], torch.full_like(seq[1:], IGNORE)))
        return torch.stack(inputs), torch.stack(targets)

    def state_dict(self) -> Dict[str, Any]:
        return {"position": list(self.position), "n_streams": self.n_streams}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state["n_streams"] != self.n_streams:
            raise UserError(f"checkpointed mqar state has {state['n_streams']} streams, this run "
                            f"{self.n_streams}; keep train.global_batch when resuming")
        self.position = list(state["position"])
