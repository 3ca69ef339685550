"""What the core's data sources share: stream i is a fixed sequence of windows, read one by one.

The constructor takes the factory's keywords (`zoo_core.loop.components.build_source`)
once for every source and calls `open(config, tokenizer, split, cache_dir, progress)`,
where a source reads or checks its data. A source implements `row(stream, k)` ->
(inputs, targets, starts) for window k of a stream (seq_len each; starts a bool
tensor, True where a document begins, or None when the source does not know its
documents). `batch` reads the next window of each requested stream and stacks them:
(inputs, targets), plus starts when `reports_documents` (see
`zoo_core.interfaces.DataSource`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zoo_core.interfaces import DataSource, Tokenizer

Row = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


class WindowSource(DataSource):
    def __init__(
        self,
        config: Any,
        *,
        tokenizer: Tokenizer | None = None,
        split: str,
        seq_len: int,
        n_streams: int,
        seed: int = 0,
        cache_dir: str | None = None,
        progress: bool = True,
    ) -> None:
        self.seq_len, self.n_streams, self.seed = seq_len, n_streams, seed
        #: Windows consumed, per stream (what `state_dict` saves).
        self.position = [0] * n_streams
        self.open(config, tokenizer, split, cache_dir, progress)

    def open(self, config: Any, tokenizer: Tokenizer | None, split: str, cache_dir: str | None, progress: bool) -> None:
        """Read or check the data for `split` (seq_len, n_streams and seed are set)."""
        raise NotImplementedError

    def row(self, stream: int, k: int) -> Row:
        """Window k of a stream. Called once per window, in order (a source may count in it)."""
        raise NotImplementedError

    def batch(self, stream_ids: Sequence[int]) -> tuple[torch.Tensor, ...]:
        rows = []
        for s in stream_ids:
            rows.append(self.row(s, self.position[s]))
            self.position[s] += 1
        inputs, targets, starts = zip(*rows)
        if self.reports_documents:
            return torch.stack(inputs), torch.stack(targets), torch.stack(starts)
        return torch.stack(inputs), torch.stack(targets)
