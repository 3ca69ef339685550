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


def build_source(cfg: Any, registry: Any, tokenizer: Tokenizer, split: str, n_streams: int,
                 progress: bool = True) -> DataSource:
    opts = _opts(cfg.data.source)
    entry = registry.get("data", opts["name"])
    return entry.factory(to_dataclass(opts, entry.config_cls), tokenizer=tokenizer, split=split,
                         seq_len=cfg.data.seq_len, n_streams=n_streams, seed=cfg.train.seed,
                         cache_dir=cfg.data.cache_dir, progress=progress)
