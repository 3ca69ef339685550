"""The `corpus` data source: prepared token shards read as parallel streams.

The split's tokens (all shards, in order) are cut into `n_streams` contiguous
sections; stream i reads section i window after window (Languini's layout).
Which rank reads a stream never changes what it reads, so losses are the same
at any world size and recurrent state can carry from one window to the next.

Nothing is dropped: sections cover every token (their lengths differ by at
most one), and a stream reads its section as a ring. A window that reaches
the section's end continues at its start, so the remainder that does not fill
a whole window opens the next epoch instead of being skipped. Each window
holds seq_len + 1 tokens (inputs and shifted targets), so consecutive windows
share one token.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo_core.data.prepare import prepare
from zoo_core.data.shards import MANIFEST, load_split, prepared_dir_for
from zoo_core.errors import UserError
from zoo_core.interfaces import DataSource, Tokenizer


@dataclass
class CorpusConfig:
    #: A named corpus (shakespeare), a prepared directory, or text/jsonl/parquet files or directories.
    path: str = "shakespeare"
    #: The rest apply when `path` is raw text, prepared into the cache on first use.
    val_fraction: float = 0.05
    text_field: str = "text"
    workers: int = 1
    shard_mb: float = 64.0
    #: Shard checks: size (sizes only), lazy (sha256 of each shard on first read), full (all at start).
    verify: str = "lazy"


def resolve_prepared(
    path: str, tokenizer: Tokenizer, config: Any, cache_dir: str | None = None, progress: bool = True
) -> Path:
    """A prepared directory for `path`, preparing it on first use."""
    p = Path(path).expanduser()
    if (p / MANIFEST).exists():
        return p
    out = prepared_dir_for(path, tokenizer, config.val_fraction, cache_dir, config.text_field)
    return prepare(
        path,
        tokenizer,
        out,
        config.val_fraction,
        config.text_field,
        progress,
        workers=config.workers,
        shard_mb=config.shard_mb,
    )


class CorpusSource(DataSource):
    def __init__(
        self,
        config: CorpusConfig,
        *,
        tokenizer: Tokenizer,
        split: str,
        seq_len: int,
        n_streams: int,
        seed: int = 0,
        cache_dir: str | None = None,
        progress: bool = True,
    ) -> None:
        self.seq_len, self.n_streams = seq_len, n_streams
        self.prepared = resolve_prepared(config.path, tokenizer, config, cache_dir, progress)
        self.tokens, info = load_split(self.prepared, split, tokenizer, config.verify)
        self.bytes_per_token = info["bytes"] / max(info["tokens"], 1)
        n = len(self.tokens)
        self.bounds = [(i * n) // n_streams for i in range(n_streams + 1)]
        if n // n_streams < seq_len + 1:
            raise UserError(
                f"the {split} split of '{config.path}' has {n} tokens: too few for {n_streams} streams "
                f"of {seq_len + 1} tokens; lower train.global_batch (or eval_batch_size) or "
                f"data.seq_len, or use more data"
            )
        self.position = [0] * n_streams  # windows consumed, per stream

    def section(self, stream: int) -> tuple[int, int]:
        """(first token, length) of a stream's section."""
        return self.bounds[stream], self.bounds[stream + 1] - self.bounds[stream]

    def window(self, stream: int, k: int) -> np.ndarray:
        """The k-th window of a stream: seq_len + 1 tokens, wrapping around its section."""
        start, length = self.section(stream)
        need = self.seq_len + 1
        off = (k * self.seq_len) % length
        head = self.tokens.read(start + off, min(need, length - off))
        if len(head) == need:
            return head
        return np.concatenate([head, self.tokens.read(start, need - len(head))])

    def batch(self, stream_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for s in stream_ids:
            rows.append(np.asarray(self.window(s, self.position[s]), dtype=np.int64))
            self.position[s] += 1
        data = torch.from_numpy(np.stack(rows))
        return data[:, :-1], data[:, 1:]

    def wrapped(self, stream: int) -> bool:
        """True when the next window of this stream reaches past its section's end (an epoch ends in it)."""
        _, length = self.section(stream)
        return (self.position[stream] * self.seq_len) % length + self.seq_len + 1 > length

    def state_dict(self) -> dict[str, Any]:
        return {
            "position": list(self.position),
            "n_streams": self.n_streams,
            "seq_len": self.seq_len,
            "tokens": len(self.tokens),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_layout(state, self.n_streams, self.seq_len)
        if state.get("tokens", len(self.tokens)) != len(self.tokens):
            warnings.warn(
                f"the data changed since the checkpoint ({state['tokens']} tokens then, "
                f"{len(self.tokens)} now): streams resume at the same window numbers in the new data",
                stacklevel=2,
            )
        self.position = list(state["position"])


def check_layout(state: dict[str, Any], n_streams: int, seq_len: int) -> None:
    if state["n_streams"] != n_streams or state["seq_len"] != seq_len:
        raise UserError(
            f"checkpointed data state has {state['n_streams']} streams of {state['seq_len']} tokens, "
            f"this run {n_streams} of {seq_len}; keep train.global_batch and data.seq_len "
            f"when resuming"
        )
