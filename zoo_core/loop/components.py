"""Build tokenizers and data sources from resolved config sections."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from zoo_core.config import to_dataclass
from zoo_core.interfaces import DataSource, Tokenizer


def _opts(section: Any) -> dict:
    return OmegaConf.to_container(section) if not isinstance(section, dict) else dict(section)


def build_tokenizer(cfg: Any, registry: Any) -> Tokenizer:
    opts = _opts(cfg.data.tokenizer)
    entry = registry.get("tokenizers", opts["name"])
    return entry.factory(to_dataclass(opts, entry.config_cls))


def build_source(
    cfg: Any, registry: Any, tokenizer: Tokenizer, split: str, n_streams: int, progress: bool = True
) -> DataSource:
    opts = _opts(cfg.data.source)
    entry = registry.get("data", opts["name"])
    return entry.factory(
        to_dataclass(opts, entry.config_cls),
        tokenizer=tokenizer,
        split=split,
        seq_len=cfg.data.seq_len,
        n_streams=n_streams,
        seed=cfg.train.seed,
        cache_dir=cfg.data.cache_dir,
        progress=progress,
    )


def source_vocab(cfg: Any, registry: Any) -> int:
    """Token ids a data source emits on its own (a synthetic task's vocabulary), read from the
    source class's `declared_vocab(config)` without building it; 0 when it uses the tokenizer's."""
    opts = _opts(cfg.data.source)
    entry = registry.get("data", opts["name"])
    declared = getattr(entry.factory, "declared_vocab", None)
    return int(declared(to_dataclass(opts, entry.config_cls))) if callable(declared) else 0


def model_vocab(cfg: Any, registry: Any, tokenizer: Tokenizer) -> int:
    """The embedding size a run needs: model.vocab_size if set, else max(tokenizer, source) padded to 8."""
    from zoo_core.loop.model import padded_vocab

    if cfg.model.vocab_size:
        return int(cfg.model.vocab_size)
    return padded_vocab(max(tokenizer.vocab_size, source_vocab(cfg, registry)))
