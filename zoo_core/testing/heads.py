"""Checks for loss heads: `forward(h, targets) -> HeadOutput`, `logits(h)`, gradients."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zoo_core.interfaces import IGNORE_INDEX, HeadOutput
from zoo_core.testing.build import materialise
from zoo_core.testing.component import Component
from zoo_core.testing.report import Report
from zoo_core.testing.sequence import yaml_round_trip

CHECKS = ("output (tied)", "output (untied)", "gradients", "bf16", "flops accounting", "yaml round-trip")


class _Holder(nn.Module):
    """Embedding plus head, built together as LanguageModel builds them (tied weights)."""

    def __init__(self, factory: Callable, dim: int, vocab: int, config: Any, tied: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = factory(dim, vocab, self.embed if tied else None, config)


class HeadChecks:
    def __init__(
        self,
        component: Component,
        dim: int = 32,
        vocab: int = 64,
        seq_len: int = 16,
        batch: int = 2,
        seed: int = 0,
    ) -> None:
        c = component
        self.label, self.factory, self.config, self.config_cls = c.label, c.factory, c.config, c.config_cls
        self.dim, self.V, self.T, self.B, self.seed = dim, vocab, seq_len, batch, seed

    def holder(self, tied: bool = True, dtype=torch.float32) -> _Holder:
        h = materialise(lambda: _Holder(self.factory, self.dim, self.V, self.config, tied), dtype, self.seed)
        with torch.no_grad():
            torch.nn.init.normal_(h.embed.weight, std=0.02)
        return h

    def inputs(self, dtype=torch.float32):
        g = torch.Generator().manual_seed(self.seed + 1)
        h = torch.randn(self.B, self.T, self.dim, generator=g).to(dtype)
        targets = torch.randint(0, self.V, (self.B, self.T), generator=g)
        targets[0, -3:] = IGNORE_INDEX  # the loss must skip ignored targets
        return h, targets

    def _loss(self, holder: _Holder, h: Tensor, targets: Tensor) -> HeadOutput:
        head = holder.head
        if getattr(head, "custom_backward", False):
            return head.forward_backward(h, targets, 1.0)
        out = head(h, targets)
        assert isinstance(out, HeadOutput), f"forward must return HeadOutput, got {type(out).__name__}"
        if h.requires_grad:
            out.loss.backward()
        return out

    # -- the checks -----------------------------------------------------------------
    def output(self, tied: bool) -> str:
        holder = self.holder(tied)
        h, targets = self.inputs()
        h.requires_grad_(True)
        out = self._loss(holder, h, targets)
        assert isinstance(out, HeadOutput), f"forward must return HeadOutput, got {type(out).__name__}"
        loss = out.loss
        assert isinstance(loss, Tensor) and loss.dim() == 0, "HeadOutput.loss must be a scalar tensor"
        assert torch.isfinite(loss), f"loss is {float(loss.detach())}"
        assert isinstance(out.n_tokens, int) and 0 < out.n_tokens <= targets.numel(), (
            f"n_tokens = {out.n_tokens!r}: must be an int in 1..{targets.numel()}"
        )
        for k, v in out.metrics.items():
            assert isinstance(v, (int, float)) or (isinstance(v, Tensor) and v.numel() == 1), (
                f"metric {k} is not a scalar"
            )
        with torch.no_grad():
            logits = holder.head.logits(h.detach())
        assert tuple(logits.shape) == (self.B, self.T, self.V), (
            f"logits shape {tuple(logits.shape)} != (batch, time, vocab) {(self.B, self.T, self.V)}"
        )
        return f"loss {float(loss.detach()):.3f} over {out.n_tokens} tokens, logits {tuple(logits.shape)}"

    def gradients(self) -> str:
        notes = []
        for tied in (True, False):
            holder = self.holder(tied=tied)
            h, targets = self.inputs()
            h.requires_grad_(True)
            self._loss(holder, h, targets)
            assert h.grad is not None and h.grad.abs().sum() > 0, "no gradient reaches the hidden states h"
            dead = [
                n
                for n, p in holder.head.named_parameters()
                if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
            ]
            assert not dead, f"no gradient reaches ({'tied' if tied else 'untied'}): {', '.join(dead[:5])}"
            g = holder.embed.weight.grad
            extra = " + tied embedding" if tied and g is not None and g.abs().sum() > 0 else ""
            notes.append(
                f"{'tied' if tied else 'untied'}: h + {sum(1 for _ in holder.head.parameters())} params{extra}"
            )
        return "; ".join(notes)

    def bf16(self) -> str:
        holder = self.holder(dtype=torch.bfloat16)
        h, targets = self.inputs(torch.bfloat16)
        with torch.no_grad():
            out = holder.head(h, targets) if not getattr(holder.head, "custom_backward", False) else None
        if out is None:
            h.requires_grad_(True)
            out = self._loss(holder, h, targets)
        assert torch.isfinite(out.loss), f"bf16 loss is {float(out.loss.detach())}"
        return "finite loss"

    def accounting(self) -> str:
        f = float(self.holder().head.flops_per_token())
        assert math.isfinite(f) and f > 0, f"flops_per_token() = {f}: must be positive"
        return f"flops/token {f:.3g}"

    def run(self, skip: Sequence[str] = ()) -> Report:
        report = Report()
        plan = [
            ("output (tied)", lambda: self.output(True)),
            ("output (untied)", lambda: self.output(False)),
            ("gradients", self.gradients),
            ("bf16", self.bf16),
            ("flops accounting", self.accounting),
            ("yaml round-trip", lambda: yaml_round_trip(self.config, self.config_cls)),
        ]
        return report.run_plan(self.label, plan, skip, build=self._build_on_meta)

    def _build_on_meta(self) -> None:
        with torch.device("meta"):
            _Holder(self.factory, self.dim, self.V, self.config, True)
