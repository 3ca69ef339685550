"""Checks for anything with the sequence contract: mixers, and blocks wrapping one.

Equivalence checks run in float64, so a mismatch is a bug and not rounding;
shape/dtype checks run in the dtypes training uses (fp32, bf16).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from zoo_core.config import to_dataclass, validate_options
from zoo_core.testing.build import (
    config_equal,
    materialise,
    max_abs,
    rel_err,
    seq_forward,
    state_bytes,
    state_leaves,
    step_through,
)
from zoo_core.testing.documents import CHECKS as DOCUMENT_CHECKS
from zoo_core.testing.documents import DocumentChecks
from zoo_core.testing.fsdp import check_fsdp_matches
from zoo_core.testing.report import Report

#: Relative tolerance of the float64 equivalence checks.
TOL = 1e-6
CHECKS = (
    "meta-init",
    "shape+dtype fp32",
    "shape+dtype bf16",
    "causality",
    "step = forward",
    "state carry",
    "state batch-first",
    "gradients",
    "flops/state accounting",
    "compile",
    "fsdp",
    "yaml round-trip",
    *DOCUMENT_CHECKS,
)


class SequenceChecks:
    """`build(dim)` returns an unmaterialised module (called under the meta device)."""

    def __init__(
        self,
        label: str,
        build: Callable[[int], nn.Module],
        config: Any,
        config_cls: type | None,
        dim: int = 32,
        seq_len: int = 16,
        batch: int = 2,
        seed: int = 0,
    ) -> None:
        self.label, self.build, self.config, self.config_cls = label, build, config, config_cls
        self.dim, self.T, self.B, self.seed = dim, seq_len, batch, seed

    def module(self, dtype=torch.float32, dim: int | None = None) -> nn.Module:
        d = dim or self.dim
        return materialise(lambda: self.build(d), dtype, self.seed)

    def x(self, dtype=torch.float64, T: int | None = None) -> Tensor:
        g = torch.Generator().manual_seed(self.seed + 1)
        return torch.randn(self.B, T or self.T, self.dim, generator=g, dtype=torch.float64).to(dtype)

    # -- the checks -----------------------------------------------------------------
    def meta_init(self) -> str:
        m = self.module()
        n = 0
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.is_floating_point():
                assert torch.isfinite(t).all(), (
                    f"{name} is not finite after reset_parameters on a meta-built "
                    f"module: initialise every parameter/buffer in reset_parameters"
                )
            n += t.numel()
        return f"{n} parameter/buffer values initialised"

    def dtype(self, dtype: torch.dtype) -> str:
        m = self.module(dtype)
        x = self.x(dtype)
        with torch.no_grad():
            y, _ = seq_forward(m, x)
        assert y.shape == x.shape, f"output shape {tuple(y.shape)} != input shape {tuple(x.shape)}"
        assert y.dtype == dtype, f"output dtype {y.dtype} != input dtype {dtype}"
        assert torch.isfinite(y).all(), "output has NaN/inf"
        return f"{tuple(y.shape)} {str(dtype).replace('torch.', '')}"

    def causality(self) -> str:
        m = self.module(torch.float64)
        x = self.x()
        t = self.T // 2
        x2 = x.clone()
        x2[:, t] += torch.randn(x.shape[0], x.shape[2], dtype=x.dtype, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            y1, _ = seq_forward(m, x)
            y2, _ = seq_forward(m, x2)
        scale = max_abs(y1) + 1e-12
        leak = max_abs(y1[:, :t] - y2[:, :t]) / scale
        assert leak < 1e-9, f"changing token {t} changed outputs before it (by {leak:.1e} relative): future leaks in"
        moved = max_abs(y1[:, t:] - y2[:, t:]) / scale
        assert moved > 1e-9, f"changing token {t} changed no output at or after it: the input is ignored"
        return f"perturbing token {t} leaves 0..{t - 1} unchanged"

    def step(self) -> str:
        m = self.module(torch.float64)
        x = self.x()
        with torch.no_grad():
            y, _ = seq_forward(m, x)
            stepped, _ = step_through(m, x, m.init_state(self.B, x.device, torch.float64))
            err = rel_err(stepped, y)
            assert err < TOL, f"step-by-step decoding from init_state differs from forward (rel err {err:.2e})"
            # Generation's path: prefill with forward(return_state=True), then step.
            k = self.T // 2
            _, state = seq_forward(m, x[:, :k], return_state=True)
            assert state is not None, "forward(return_state=True) returned state None"
            stepped, _ = step_through(m, x[:, k:], state)
            err2 = rel_err(stepped, y[:, k:])
            assert err2 < TOL, f"step after a forward prefill differs from forward (rel err {err2:.2e})"
        return f"rel err {max(err, err2):.1e} (from init_state and after prefill)"

    def state_carry(self) -> str:
        m = self.module(torch.float64)
        x = self.x()
        errs = []
        with torch.no_grad():
            whole, _ = seq_forward(m, x)
            for k in (1, self.T // 3):
                a, s = seq_forward(m, x[:, :k], return_state=True)
                b, _ = seq_forward(m, x[:, k:], s)
                errs.append(rel_err(torch.cat([a, b], 1), whole))
                assert errs[-1] < TOL, (
                    f"two segments ({k} + {self.T - k} tokens) with the carried state differ "
                    f"from the whole sequence (rel err {errs[-1]:.2e})"
                )
            y0, _ = seq_forward(m, x, m.init_state(self.B, x.device, torch.float64))
            errs.append(rel_err(y0, whole))
            assert errs[-1] < TOL, (
                f"forward from init_state differs from forward with state=None (rel err {errs[-1]:.2e})"
            )
        return f"rel err {max(errs):.1e}"

    def state_layout(self) -> str:
        m = self.module()
        with torch.no_grad():
            _, s = seq_forward(m, self.x(torch.float32), return_state=True)
            s0 = m.init_state(self.B, torch.device("cpu"), torch.float32)
        for which, st in (("forward's state", s), ("init_state", s0)):
            for t in state_leaves(st):
                assert t.dim() >= 1 and t.shape[0] == self.B, (
                    f"{which} has a tensor of shape {tuple(t.shape)}: every state tensor must be batch-first "
                    f"(batch {self.B})"
                )
        return f"{len(state_leaves(s))} tensors, batch first"

    def gradients(self) -> str:
        m = self.module()
        dead = self._dead_params(m)
        if dead:
            # Zero-initialised paths (e.g. a zero output projection) hide gradients at init:
            # jitter the parameters and look again, so only truly disconnected ones fail.
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(torch.randn_like(p) * 0.02 * (p.abs().mean() + 0.1))
            dead = self._dead_params(m)
        assert not dead, f"no gradient reaches: {', '.join(dead[:5])}{' ...' if len(dead) > 5 else ''}"
        return f"{sum(1 for _ in m.parameters())} parameters and the input get gradients"

    def _dead_params(self, m: nn.Module):
        m.zero_grad(set_to_none=True)
        x = self.x(torch.float32).requires_grad_(True)
        y, _ = seq_forward(m, x)
        proj = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(y.dtype)
        (y * proj).sum().backward()
        dead = [] if x.grad is not None and x.grad.abs().sum() > 0 else ["the input x"]
        for name, p in m.named_parameters():
            if p.requires_grad:
                if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0:
                    dead.append(name)
        return dead

    def accounting(self) -> str:
        m, m2 = self.module(), self.module(dim=2 * self.dim)
        f, f2 = float(m.flops_per_token(self.T)), float(m2.flops_per_token(self.T))
        s, s2 = m.state_size(self.T), m2.state_size(self.T)
        assert math.isfinite(f) and f > 0, f"flops_per_token({self.T}) = {f}: must be positive"
        assert 1.2 < f2 / f < 10, (
            f"flops_per_token grows {f2 / f:.2f}x from dim {self.dim} to {2 * self.dim}; "
            f"expected between linear and cubic in dim"
        )
        n_params = sum(p.numel() for p in m.parameters())
        assert f >= n_params, (
            f"flops_per_token = {f:.0f} is below the parameter count {n_params}: "
            f"each weight used per token costs 2 FLOPs (multiply-add)"
        )
        assert isinstance(s, (int, float)) and s >= 0, f"state_size({self.T}) = {s!r}: must be bytes >= 0"
        assert s2 >= s, f"state_size shrinks from {s} to {s2} bytes when dim doubles"
        with torch.no_grad():
            _, st = seq_forward(m, self.x(torch.float32), return_state=True)
        actual = state_bytes(st) / self.B
        if actual > 0 or s > 0:
            ratio = s / max(actual, 1e-9)
            assert 0.5 <= ratio <= 2, (
                f"state_size({self.T}) = {s} bytes but forward's state holds {actual:.0f} bytes per sequence"
            )
        return f"flops/token {f:.3g} ({f2 / f:.1f}x at 2*dim), state {s} B/seq (actual {actual:.0f})"

    def compiled(self) -> str:
        """What `parallel.compile=true` does to each block, traced with aot_eager: dynamo and AOT
        autograd capture the graph inductor would get (custom ops need fake kernels and registered
        autograd), in about a second instead of inductor's several. Graph breaks are reported, not
        failed: they cost speed, not correctness."""
        from torch._dynamo.utils import counters

        m = self.module(torch.float64)
        x = self.x().requires_grad_(True)
        proj = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
        leaves = [x, *(p for p in m.parameters() if p.requires_grad)]

        def run(mod):
            y, _ = seq_forward(mod, x)
            return [y, *torch.autograd.grad((y * proj).sum(), leaves, allow_unused=True)]

        eager = run(m)
        for attempt in range(2):
            breaks, graphs = sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]
            got = run(torch.compile(m, backend="aot_eager"))
            breaks = sum(counters["graph_break"].values()) - breaks
            if counters["stats"]["unique_graphs"] > graphs or attempt:
                break
            # Nothing compiled: dynamo hit its recompile limit for this forward (many instances of
            # one class in a process) and ran it eagerly. Start from empty caches, once.
            torch._dynamo.reset()
        assert counters["stats"]["unique_graphs"] > graphs, "torch.compile captured no graph of forward"
        errs = [rel_err(a, b) for a, b in zip(got, eager) if b is not None]
        assert max(errs) < TOL, (
            f"torch.compile changes the output or gradients (rel err {max(errs):.2e}): "
            f"run `TORCH_LOGS=graph_breaks` on it, and give custom ops fake kernels"
        )
        return f"rel err {max(errs):.1e}, {breaks} graph break{'s' * (breaks != 1)}"

    def fsdp(self) -> str:
        m = self.module()
        x = self.x(torch.float32)
        return check_fsdp_matches(m, lambda mod: seq_forward(mod, x)[0])

    def yaml(self) -> str:
        return yaml_round_trip(self.config, self.config_cls)

    def run(self, skip: Sequence[str] = ()) -> Report:
        report = Report()
        plan = [
            ("meta-init", self.meta_init),
            ("shape+dtype fp32", lambda: self.dtype(torch.float32)),
            ("shape+dtype bf16", lambda: self.dtype(torch.bfloat16)),
            ("causality", self.causality),
            ("step = forward", self.step),
            ("state carry", self.state_carry),
            ("state batch-first", self.state_layout),
            ("gradients", self.gradients),
            ("flops/state accounting", self.accounting),
            ("compile", self.compiled),
            ("fsdp", self.fsdp),
            ("yaml round-trip", self.yaml),
            ("document resets", DocumentChecks(self).packed),
            ("step with resets", DocumentChecks(self).step),
        ]
        return report.run_plan(self.label, plan, skip, build=self._build_on_meta)

    def _build_on_meta(self) -> None:
        with torch.device("meta"):
            self.build(self.dim)


def yaml_round_trip(config: Any, config_cls: type | None) -> str:
    """The config written to a run's config.yaml reads back as the same object."""
    if config_cls is None:
        return "takes no options"
    text = OmegaConf.to_yaml(OmegaConf.structured(config))
    loaded = OmegaConf.to_container(OmegaConf.create(text))
    back = to_dataclass(validate_options("component", {"name": "x", **loaded}, config_cls), config_cls)
    assert config_equal(back, config), f"config read back from YAML differs: {back!r} != {config!r}"
    return f"{len(loaded)} options"
