"""The `corpus` data source: prepared token shards read as parallel streams.

Stream i of n reads the i-th contiguous section of the split, window after
window (Languini's layout). Which rank reads a stream never changes what it
reads, so losses are the same at any world size and recurrent state can carry
from one window of a stream to the next.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from zoo_core.data.shards import load_split, prepare, prepared_dir_for
from zoo_core.errors import UserError
from zoo_core.interfaces import DataSource, Tokenizer


@dataclass
class CorpusConfig:
    #: A named corpus (shakespeare), a prepared directory, or text/jsonl files or directories.
    path: str = "shakespeare"
    val_fraction: float = 0.05
    text_field: str = "text"


def resolve_prepared(config: CorpusConfig, tokenizer: Tokenizer, cache_dir: Optional[str] = None,
                     progress: bool = True) -> Path:
    """A prepared directory for `config.path`, preparing it on first use."""
    path = Path(config.path).expanduser()
    if (path / "manifest.json").exists():
        return path
    out = prepared_dir_for(config.path, tokenizer, config.val_fraction, cache_dir)
    return prepare(config.path, tokenizer, out, config.val_fraction, config.text_field, progress)


class CorpusSource(DataSource):
    def __init__(self, config: CorpusConfig, *, tokenizer: Tokenizer, split: str, seq_len: int,
                 n_streams: int, seed: int = 0, cache_dir: Optional[str] = None, progress: bool = True) -> None:
        self.seq_len, self.n_streams = seq_len, n_streams
        self.tokens, info = load_split(resolve_prepared(config, tokenizer, cache_dir, progress), split, tokenizer)
        self.bytes_per_token = info["bytes"] / max(info["tokens"], 1)
        n = len(self.tokens)
        self.section = n // n_streams
        self.windows = (self.section - 1) // seq_len  # each window needs seq_len + 1 tokens
        if self.windows < 1:
            raise UserError(f"the {split} split has {n} tokens: too few for {n_streams} streams of "
                            f"seq_len {seq_len}; lower train.global_batch / data.seq_len or use more data")
        self.position = [0] * n_streams  # windows consumed, per stream

    def window(self, stream: int, k: int) -> np.ndarray:
        start = stream * self.section + (k % self.windows) * self.seq_len
        return self.tokens[start:start + self.seq_len + 1]

    def batch(self, stream_ids: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for s in stream_ids:
            rows.append(np.asarray(self.window(s, self.position[s]), dtype=np.int64))
            self.position[s] += 1
        data = torch.from_numpy(np.stack(rows))
        return data[:, :-1], data[:, 1:]

    def wrapped(self, stream: int) -> bool:
        """True when the next window of this stream starts over (an epoch ended)."""
        return self.position[stream] % self.windows == 0

    def state_dict(self) -> Dict[str, Any]:
        return {"position": list(self.position), "n_streams": self.n_streams, "seq_len": self.seq_len}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state["n_streams"] != self.n_streams or state["seq_len"] != self.seq_len:
            raise UserError(f"checkpointed data state has {state['n_streams']} streams of {state['seq_len']} tokens, "
                            f"this run {self.n_streams} of {self.seq_len}; keep train.global_batch and data.seq_len "
                            f"when resuming")
        self.position = list(state["position"])
