"""Helpers for tests that use Hugging Face transformers as an outside oracle.

    transformers = require_transformers()          # skips the test, one line, when absent
    with hf_float64():                             # transformers' torch paths, kept in float64
        out = hf_module(x)

transformers' reference (non-CUDA) paths cast to float32 in places (`A_log.float()`,
the chunked scan's `.float()`, norms' `.to(torch.float32)`, the RG-LRU's `.type(float32)`), which would cap a float64
comparison at float32 rounding. `hf_float64` keeps float64 tensors float64 through
those casts (and turns integer tensors, RoPE's positions, into float64) while it is active, so
module-level comparisons can be held to ~1e-12.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

#: Nothing reaches a hub: every HF model in zoo's tests is built from a config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def require_transformers() -> Any:
    import pytest

    return pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")


@contextlib.contextmanager
def hf_float64() -> Iterator[None]:
    f64, f32 = torch.float64, torch.float32
    orig_float, orig_to, orig_type = torch.Tensor.float, torch.Tensor.to, torch.Tensor.type

    def float_(self, *args, **kwargs):
        if self.dtype == f64:
            return self
        if not self.is_floating_point() and not self.is_complex():  # positions for RoPE angles
            return orig_to(self, f64)
        return orig_float(self, *args, **kwargs)

    def to(self, *args, **kwargs):
        if self.dtype == f64:
            args = tuple(f64 if a is f32 else a for a in args)
            if kwargs.get("dtype") is f32:
                kwargs["dtype"] = f64
        return orig_to(self, *args, **kwargs)

    def type_(self, *args, **kwargs):
        if self.dtype == f64 and args and args[0] is f32:
            args = (f64,) + args[1:]
        return orig_type(self, *args, **kwargs)

    torch.Tensor.float, torch.Tensor.to, torch.Tensor.type = float_, to, type_
    try:
        yield
    finally:
        torch.Tensor.float, torch.Tensor.to, torch.Tensor.type = orig_float, orig_to, orig_type


def make_run(runs_dir, name: str, overrides=(), seed: int = 0, perturb: float = 0.0):
    """A run directory with a step-1 checkpoint of a freshly built model (no training):
    the quick way to get many tiny runs for export tests. `perturb` adds noise to every
    parameter so that norms, biases and gates are far from their initial values."""
    from pathlib import Path

    from zoo_core.config import load_config, resolve, save_config
    from zoo_core.loop import checkpoint
    from zoo_core.loop.distributed import World
    from zoo_core.loop.model import build_model
    from zoo_core.registry import get_registry

    registry = get_registry()
    cfg = resolve(load_config(None, [f"name={name}", f"runs_dir={runs_dir}", *overrides]), registry)
    if cfg.model.vocab_size is None:
        cfg.model.vocab_size = 264  # the byte tokenizer's 259, padded to a multiple of 8
    torch.manual_seed(seed)
    model = build_model(cfg, registry, cfg.model.vocab_size)
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * perturb)
    run_dir = Path(runs_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.save(run_dir / "checkpoints", 1, model, None, World(), {"step": 1}, {}, meta={})
    save_config(cfg, run_dir / "config.yaml")
    return run_dir


def tokens(T: int = 24, B: int = 2, seed: int = 0) -> torch.Tensor:
    """(B, T) byte-tokenizer ids (vocab 259), the same for a given seed."""
    return torch.randint(0, 259, (B, T), generator=torch.Generator().manual_seed(seed))


def hf_logits(model: Any, x: torch.Tensor) -> torch.Tensor:
    """A transformers causal LM's logits for `x`, without its cache."""
    return model(input_ids=x, use_cache=False).logits


def export_families(root, families: dict, base, cli: Any, perturb: float = 0.1) -> dict:
    """{name: (run dir, exported dir)}: per family a run made by `make_run` (base + its overrides,
    seed = its index, weights moved off init by `perturb`) and exported with `zoo export --format hf`
    through `cli` (`zoo_core.cli.main`, passed in: the testing room does not import the commands)."""
    from pathlib import Path

    root, out = Path(root), {}
    for i, (name, overrides) in enumerate(families.items()):
        run = make_run(root / "runs", name, [*base, *overrides], seed=i, perturb=perturb)
        assert cli(["export", str(run), "--format", "hf", "--out", str(root / f"{name}-hf")]) == 0
        out[name] = (run, root / f"{name}-hf")
    return out
