"""What the core's data sources share: stream i is a fixed sequence of windows, read one by one.

A source implements `row(stream, k)` -> (inputs, targets, starts) for window k of a
stream (seq_len each; starts a bool tensor, True where a document begins, or None
when the source does not know its documents). `batch` reads the next window of
each requested stream and stacks them: (inputs, targets), plus starts when
`reports_documents` (see `zoo_core.interfaces.DataSource`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo_core.interfaces import DataSource

Row = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


class WindowSource(DataSource):
    #: Windows consumed, per stream (what `state_dict` saves).
    position: list[int]

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
