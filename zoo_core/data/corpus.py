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

Documents (data.documents=reset): the prepared index records where each
document ends, so a document begins at the split's first token and at each
token after an end. Where a window wraps around its section's end, the token
after the wrap begins a document too: it does not continue the tokens before
it. A directory prepared before the index existed (format 1) reports none.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo_core.data.prepare import prepare
from zoo_core.data.shards import MANIFEST, load_split, prepared_dir_for
from zoo_core.data.windows import Row, WindowSource
from zoo_core.errors import UserError
from zoo_core.interfaces import Tokenizer


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


class CorpusSource(WindowSource):
    reports_documents = True

    def open(self, config: CorpusConfig, tokenizer: Tokenizer, split: str, cache_dir: str | None, progress: bool):
        seq_len, n_streams = self.seq_len, self.n_streams
        self.prepared = resolve_prepared(config.path, tokenizer, config, cache_dir, progress)
        self.tokens, info = load_split(self.prepared, split, tokenizer, config.verify)
        self.bytes_per_token = info["bytes"] / max(info["tokens"], 1)
        self.reports_documents = self.tokens.has_documents
        n = len(self.tokens)
        self.bounds = [(i * n) // n_streams for i in range(n_streams + 1)]
        if n // n_streams < seq_len + 1:
            raise UserError(
                f"the {split} split of '{config.path}' has {n} tokens: too few for {n_streams} streams "
                f"of {seq_len + 1} tokens; lower train.global_batch (or eval_batch_size) or "
                f"data.seq_len, or use more data"
            )

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

    def window_starts(self, stream: int, k: int) -> np.ndarray:
        """A bool per token of `window(stream, k)`: True where a document begins."""
        start, length = self.section(stream)
        need = self.seq_len + 1
        off = (k * self.seq_len) % length
        head = min(need, length - off)
        out = np.empty(need, dtype=bool)
        out[:head] = self.tokens.document_starts(start + off, head)
        if head < need:  # wrapped: the section's first tokens follow its last ones
            out[head:] = self.tokens.document_starts(start, need - head)
            out[head] = True
        if off == 0 and k > 0:  # the previous window ended exactly at the section's end
            out[0] = True
        return out

    def row(self, stream: int, k: int) -> Row:
        data = torch.from_numpy(np.asarray(self.window(stream, k), dtype=np.int64))
        starts = torch.from_numpy(self.window_starts(stream, k)[:-1]) if self.reports_documents else None
        return data[:-1], data[1:], starts

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
