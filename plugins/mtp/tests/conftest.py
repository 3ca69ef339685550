"""Fixtures shared by the zoo-mtp tests (importlib mode: tests cannot import a helpers module)."""

from collections.abc import Sequence

import pytest
import torch

from zoo_core.config import load_config, resolve
from zoo_core.model import build_model
from zoo_core.registry import get_registry

VOCAB = 64


def _build_lm(mixer: str = "attention", overrides: Sequence[str] = (), dtype=torch.float64, seed: int = 0):
    """A tiny LanguageModel with the mtp head, built as `zoo train` builds it."""
    registry = get_registry()
    cfg = resolve(
        load_config(
            None,
            [
                f"model.mixer.name={mixer}",
                "model.dim=32",
                "model.n_layers=2",
                f"model.vocab_size={VOCAB}",
                "model.loss.name=mtp",
                *overrides,
            ],
        ),
        registry,
    )
    torch.manual_seed(seed)
    return build_model(cfg, registry, VOCAB).to(dtype)


@pytest.fixture
def build_lm():
    return _build_lm


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny shapes gain nothing from intra-op threads, and on a shared machine the
    # spinning threads make each small op many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
