"""The `mixture` data source: several corpora sampled by weight.

    data:
      source:
        name: mixture
        sources: {/data/books: 0.7, /data/code: 0.3}

Every source is laid out as `n_streams` streams, as in `corpus`. Window k of
stream i comes from the source picked by a counter-based hash of
(seed, i, k) against the cumulative weights, and is that source's next window
for stream i. The pick never depends on which rank reads the stream nor on
what came before, so sampling is deterministic from the seed and the same at
any world size; the state is, per stream, the windows read from each source.

Documents: a window gives its source's document starts, and its first token
begins a document when the window before it came from another source. The
mixture reports documents when all of its sources do.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo_core.data.corpus import CorpusConfig, CorpusSource, check_layout
from zoo_core.data.windows import Row, WindowSource
from zoo_core.errors import UserError
from zoo_core.interfaces import Tokenizer

_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of a 64-bit counter."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def uniform(seed: int, stream: int, k: int) -> float:
    """A number in [0, 1) fixed by (seed, stream, window)."""
    return _mix64(_mix64(_mix64(seed & _M64) ^ stream) ^ k) / 2.0**64


@dataclass
class MixtureConfig:
    #: Prepared directories (or corpora, prepared on first use) -> sampling weight, e.g. {books: 0.7, code: 0.3}.
    sources: dict[str, float] = field(default_factory=dict)
    #: As in `corpus`, for every source.
    val_fraction: float = 0.05
    text_field: str = "text"
    workers: int = 1
    shard_mb: float = 64.0
    verify: str = "lazy"


class MixtureSource(WindowSource):
    reports_documents = True

    def open(self, config: MixtureConfig, tokenizer: Tokenizer, split: str, cache_dir: str | None, progress: bool):
        if not config.sources:
            raise UserError(
                "data.source.sources is empty; give prepared directories and weights, "
                "e.g. sources: {data/books: 0.7, data/code: 0.3}"
            )
        bad = {k: w for k, w in config.sources.items() if not (w >= 0)}
        if bad or sum(config.sources.values()) <= 0:
            raise UserError(f"data.source.sources weights must be >= 0 with a positive sum, got {dict(config.sources)}")
        self.names: list[str] = list(config.sources)
        total = float(sum(config.sources.values()))
        self.weights = [config.sources[n] / total for n in self.names]
        self.cumulative = list(np.cumsum(self.weights)[:-1])
        common = {k: getattr(config, k) for k in ("val_fraction", "text_field", "workers", "shard_mb", "verify")}
        layout = {"seq_len": self.seq_len, "n_streams": self.n_streams, "seed": self.seed}
        self.sources = [
            CorpusSource(
                CorpusConfig(path=n, **common),
                tokenizer=tokenizer,
                split=split,
                cache_dir=cache_dir,
                progress=progress,
                **layout,
            )
            for n in self.names
        ]
        # Expected bytes per token under the mixture, for bits per byte.
        self.bytes_per_token = sum(w * s.bytes_per_token for w, s in zip(self.weights, self.sources))
        self.reports_documents = all(s.reports_documents for s in self.sources)
        self.counts = [[0] * len(self.names) for _ in range(self.n_streams)]

    def choose(self, stream: int, k: int) -> int:
        """Which source window k of this stream comes from."""
        return bisect.bisect_right(self.cumulative, uniform(self.seed, stream, k))

    def row(self, stream: int, k: int) -> Row:
        j = self.choose(stream, k)
        inputs, targets, starts = self.sources[j].row(stream, self.counts[stream][j])
        self.counts[stream][j] += 1
        if starts is not None and k > 0 and self.choose(stream, k - 1) != j:
            starts[0] = True  # the window before came from another source
        return inputs, targets, starts

    def state_dict(self) -> dict[str, Any]:
        return {
            "position": list(self.position),
            "counts": [list(c) for c in self.counts],
            "n_streams": self.n_streams,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "sources": self.names,
            "weights": self.weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_layout(state, self.n_streams, self.seq_len)
        if (
            state.get("sources") != self.names
            or state.get("seed") != self.seed
            or not np.allclose(state.get("weights", self.weights), self.weights)
        ):
            raise UserError(
                f"checkpointed mixture state is for sources {state.get('sources')} with weights "
                f"{state.get('weights')} and seed {state.get('seed')}; this run has {self.names}, "
                f"{self.weights}, seed {self.seed}: keep data.source.sources and train.seed when resuming"
            )
        self.position = list(state["position"])
        self.counts = [list(c) for c in state["counts"]]
