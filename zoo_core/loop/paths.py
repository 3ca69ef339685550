"""A run's recorded paths: absolute, so that every command works on the run from any directory.

Torch-free: the launcher writes run configs too."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

#: Option names that hold a file or directory, in data.source and data.tokenizer (any plugin's).
PATH_OPTIONS = ("path", "paths", "dir", "file", "vocab_file", "merges_file")


def _anchor(value: Any) -> Any:
    """A relative path that exists from here, made absolute; anything else (a corpus name such as
    `shakespeare`, a path that does not exist yet) as it was."""
    if isinstance(value, str) and value and not Path(value).is_absolute() and Path(value).exists():
        return str(Path(value).resolve())
    if isinstance(value, list):
        return [_anchor(v) for v in value]
    return value


def anchored(cfg: DictConfig) -> DictConfig:
    """A copy of `cfg` whose data paths are absolute, so that a run's config.yaml works from
    any directory (`cd / && zoo eval runs/x`): data.source and data.tokenizer options in
    PATH_OPTIONS, the keys of data.sources and a mixture's sources, data.cache_dir."""
    out = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)))
    data = out.get("data")
    if data is None:
        return out
    for section in ("source", "tokenizer"):
        opts = data.get(section)
        if isinstance(opts, DictConfig):
            for key in PATH_OPTIONS:
                if key in opts:
                    opts[key] = _anchor(opts[key])
            if isinstance(opts.get("sources"), DictConfig):
                opts["sources"] = {_anchor(k): v for k, v in opts["sources"].items()}
    if isinstance(data.get("sources"), DictConfig):
        data["sources"] = {_anchor(k): v for k, v in data["sources"].items()}
    if data.get("cache_dir"):
        data["cache_dir"] = _anchor(data["cache_dir"])
    return out
