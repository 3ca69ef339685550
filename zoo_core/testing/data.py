"""Checks for data sources: batch shapes, resumable position, stream independence."""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from zoo_core.interfaces import IGNORE_INDEX, Tokenizer
from zoo_core.testing.component import Component
from zoo_core.testing.report import Report, Skip
from zoo_core.testing.sequence import yaml_round_trip

CHECKS = ("batches", "documents", "resume", "stream independence", "yaml round-trip")


class DataChecks:
    def __init__(
        self,
        component: Component,
        tokenizer: Tokenizer | None = None,
        seq_len: int = 16,
        n_streams: int = 2,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        from zoo_core.tokenizers import ByteTokenizer

        c = component
        self.label, self.factory, self.config, self.config_cls = c.label, c.factory, c.config, c.config_cls
        self.tok = tokenizer or ByteTokenizer()
        self.T, self.S, self.cache_dir, self.seed = seq_len, n_streams, cache_dir, seed

    def source(self, split: str = "train"):
        # The same keywords `zoo_core.loop.components.build_source` passes.
        return self.factory(
            self.config,
            tokenizer=self.tok,
            split=split,
            seq_len=self.T,
            n_streams=self.S,
            seed=self.seed,
            cache_dir=self.cache_dir,
            progress=False,
        )

    def batches(self) -> str:
        # A synthetic source may declare its own ids (`declared_vocab`); the model is sized to cover both.
        declared = getattr(self.factory, "declared_vocab", None)
        vocab = max(self.tok.vocab_size, int(declared(self.config)) if callable(declared) else 0)
        for split in ("train", "val"):
            src = self.source(split)
            for _ in range(2):
                batch = src.batch(list(range(self.S)))
                docs = bool(getattr(src, "reports_documents", False))
                assert len(batch) == 2 + docs, (
                    f"{split} batch has {len(batch)} tensors, want {2 + docs} (reports_documents = "
                    f"{docs}: inputs, targets{', starts' * docs})"
                )
                inputs, targets = batch[0], batch[1]
                for name, t in (("inputs", inputs), ("targets", targets)):
                    assert t.dtype == torch.int64, f"{split} {name} dtype {t.dtype}, want int64"
                    assert tuple(t.shape) == (self.S, self.T), (
                        f"{split} {name} shape {tuple(t.shape)}, want (n_streams, seq_len) = {(self.S, self.T)}"
                    )
                assert 0 <= int(inputs.min()) and int(inputs.max()) < vocab, f"{split} inputs outside [0, {vocab})"
                ok = (targets == IGNORE_INDEX) | ((targets >= 0) & (targets < vocab))
                assert ok.all(), f"{split} targets outside [0, {vocab}) and not the ignore index -100"
            assert src.bytes_per_token > 0, f"bytes_per_token = {src.bytes_per_token}: must be positive"
        return f"train and val give ({self.S}, {self.T}) int64 batches"

    def documents(self) -> str:
        """Starts are bool like inputs, and agree with the documents the data shows: with the
        tokenizer's ids and an EOS token, the token after an EOS begins a document."""
        src = self.source()
        if not getattr(src, "reports_documents", False):
            raise Skip("the source reports no document starts (reports_documents = False)")
        eos = self.tok.eos_id if getattr(self.factory, "declared_vocab", None) is None else None
        n_starts = 0
        for _ in range(3):
            inputs, _, starts = src.batch(list(range(self.S)))
            assert starts.dtype == torch.bool, f"starts dtype {starts.dtype}, want torch.bool"
            assert starts.shape == inputs.shape, f"starts shape {tuple(starts.shape)} != inputs {tuple(inputs.shape)}"
            if eos is not None:
                after_eos = torch.zeros_like(starts)
                after_eos[:, 1:] = inputs[:, :-1] == eos
                missed = after_eos & ~starts
                assert not missed.any(), (
                    f"inputs[:, t] follows an EOS ({eos}) but starts[:, t] is False at "
                    f"{missed.nonzero()[0].tolist()}: a document begins after each EOS"
                )
            n_starts += int(starts.sum())
        eos_note = ", one after each EOS" if eos is not None else ""
        return f"bool starts like inputs ({n_starts} in 3 batches){eos_note}"

    def resume(self) -> str:
        src = self.source()
        src.batch(list(range(self.S)))
        saved = json.loads(json.dumps(src.state_dict()))  # must survive JSON
        want = src.batch(list(range(self.S)))
        fresh = self.source()
        fresh.load_state_dict(saved)
        got = fresh.batch(list(range(self.S)))
        assert len(want) == len(got) and all(torch.equal(a, b) for a, b in zip(want, got)), (
            "after load_state_dict(state_dict()) the next batch differs: the position does not resume"
            + (" (inputs, targets and starts)" if len(want) > 2 else "")
        )
        return "JSON state_dict resumes the same next batch" + (" and starts" if len(want) > 2 else "")

    def streams(self) -> str:
        together = self.source().batch(list(range(self.S)))
        alone = self.source().batch([self.S - 1])
        assert all(torch.equal(a[-1:], b) for a, b in zip(together, alone)), (
            f"stream {self.S - 1} reads different tokens when asked alone: a stream's windows must not depend "
            f"on which other streams a rank reads (world-size invariance)"
        )
        return "a stream reads the same alone or together"

    def run(self, skip: Sequence[str] = ()) -> Report:
        report = Report()
        plan = [
            ("batches", self.batches),
            ("documents", self.documents),
            ("resume", self.resume),
            ("stream independence", self.streams),
            ("yaml round-trip", lambda: yaml_round_trip(self.config, self.config_cls)),
        ]
        return report.run_plan(self.label, plan, skip, build=self.source)
