"""The whole request checked before anything is allocated or written.

`config.merge` has already range-checked every numeric field; here come the
checks that need the registry or the world size: the batch layout, the
tokenizer, that the model can be built at all (a plugin's own rules, such as
heads dividing dim, raise while it is built on the meta device, where nothing
is allocated), that its training state fits this machine's memory, and that
data.documents=reset has mixers, a block and a data source that handle documents.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from omegaconf import OmegaConf

from zoo_core.errors import UserError

#: Bytes of training state per parameter: fp32 weight, gradient and AdamW's two moments.
STATE_BYTES_PER_PARAM = 16


def batch_layout(global_batch: int, micro_batch: int | None, world_size: int) -> int:
    """The micro-batch size; refuses a global batch that does not split evenly."""
    micro = micro_batch or max(global_batch // world_size, 1)
    if global_batch % (micro * world_size):
        raise UserError(
            f"train.global_batch={global_batch} is not a multiple of micro_batch ({micro}) x world size "
            f"({world_size}); pick a global_batch divisible by {micro * world_size}"
        )
    return micro


def memory_bytes(device: str) -> int:
    """What one process may use: the GPU's memory, or this machine's RAM."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: do not refuse


def count_params(cfg: Any, registry: Any, vocab_size: int) -> int:
    """The model's parameter count, from one cycle of its layers built on the meta device."""
    from zoo_core.config import layer_mixers
    from zoo_core.loop.model import meta_model

    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model))
    n_layers = model_cfg.n_layers
    cycle = len(model_cfg.pattern) if model_cfg.pattern else 1
    model_cfg.n_layers = min(n_layers, cycle)
    try:
        model = meta_model(model_cfg, registry, vocab_size)
    except UserError:
        raise
    except Exception as exc:  # a plugin refusing its options: heads vs dim, a bad choice, ...
        names = sorted({m["name"] for m in layer_mixers(cfg.model)})
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"the model cannot be built with model.dim={cfg.model.dim} and mixer {', '.join(names)}: "
            f"{msg}; change those options (the plugin's README lists them)"
        ) from None
    per_layer = [sum(p.numel() for p in layer.parameters()) for layer in model.layers]
    rest = sum(p.numel() for p in model.parameters()) - sum(per_layer)
    return rest + sum(per_layer[i % len(per_layer)] for i in range(n_layers))


def check_model_fits(
    cfg: Any, registry: Any, vocab_size: int, world_size: int = 1, micro_batch: int | None = None
) -> int:
    """Refuse a model whose training state cannot fit; returns the parameter count."""
    params = count_params(cfg, registry, vocab_size)
    shards = world_size if cfg.parallel.fsdp in ("full_shard", "hybrid") else 1
    state = params * STATE_BYTES_PER_PARAM / shards
    # A floor on activations: the residual stream each block keeps for backward, and the logits.
    micro = micro_batch or max(cfg.train.global_batch // world_size, 1)
    tokens = micro * cfg.data.seq_len
    activations = 4 * tokens * (cfg.model.dim * cfg.model.n_layers + vocab_size)
    have = memory_bytes(cfg.train.device)
    if state + activations > have:
        raise UserError(
            f"this model does not fit: {params:.3g} parameters need about {_gb(state)} of training "
            f"state ({STATE_BYTES_PER_PARAM} bytes each: weights, gradients, AdamW moments) and at least "
            f"{_gb(activations)} of activations, and this process has {_gb(have)}; lower model.dim, "
            f"model.n_layers, data.seq_len or train.micro_batch"
        )
    return params


def _gb(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_request(cfg: Any, registry: Any, world_size: int = 1, memory: bool = True) -> None:
    """Everything a training run needs to hold, before the run directory is touched.
    `memory=False` (a Slurm submission: this machine's memory says nothing about the
    compute nodes') still builds the model on the meta device; each rank checks the fit."""
    check_buildable(cfg, registry, world_size, memory)
    check_existing_run(cfg, world_size)


def check_buildable(cfg: Any, registry: Any, world_size: int = 1, memory: bool = True) -> None:
    """The batch layout, the tokenizer, a model that builds and fits, and data.documents."""
    from zoo_core.loop.components import build_tokenizer
    from zoo_core.loop.model import padded_vocab

    t = cfg.train
    micro = batch_layout(t.global_batch, t.micro_batch, world_size)
    tokenizer = build_tokenizer(cfg, registry)
    vocab = cfg.model.vocab_size
    if vocab is None:
        vocab = padded_vocab(tokenizer.vocab_size)
    elif vocab < tokenizer.vocab_size:
        raise UserError(
            f"model.vocab_size={vocab} is smaller than the tokenizer's {tokenizer.vocab_size}; "
            f"leave it unset to derive it"
        )
    if memory:
        check_model_fits(cfg, registry, vocab, world_size, micro)
    else:
        count_params(cfg, registry, vocab)
    check_documents(cfg, registry)  # after the meta build, which names a mixer's bad options first


def supports_resets(entry: Any, dim: int, options: dict[str, Any]) -> bool:
    """Whether a registered mixer honours document resets: its class's `supports_resets`
    (a factory that is not a class is built on the meta device to ask the mixer itself)."""
    factory = entry.factory
    if isinstance(factory, type):
        return bool(getattr(factory, "supports_resets", False))
    from zoo_core.config import to_dataclass

    try:
        with torch.device("meta"):
            return bool(getattr(factory(dim, to_dataclass(options, entry.config_cls)), "supports_resets", False))
    except Exception:  # options it cannot be built with: the build check says why, in its own line
        return False


def _takes(fn: Any, keyword: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_documents(cfg: Any, registry: Any) -> None:
    """data.documents=reset needs every mixer, the block and the data source to handle
    document starts (docs/plugins.md); refused in one line before anything is built."""
    from zoo_core.config import layer_mixers

    if cfg.data.documents != "reset":
        return
    fix = "use data.documents=stream or"
    for opts in {m["name"]: m for m in layer_mixers(cfg.model)}.values():
        if not supports_resets(registry.get("mixers", opts["name"]), cfg.model.dim, opts):
            mixers = registry.names("mixers")
            able = [n for n in mixers if supports_resets(registry.get("mixers", n), cfg.model.dim, {"name": n})]
            raise UserError(
                f"data.documents=reset: mixer '{opts['name']}' does not support document resets "
                f"(its class has supports_resets = False); {fix} a mixer that supports resets "
                f"({', '.join(able) or 'none is installed'})"
            )
    block = registry.get("blocks", cfg.model.block["name"]).factory
    if not (_takes(getattr(block, "forward", None), "resets") and _takes(getattr(block, "step", None), "reset")):
        raise UserError(
            f"data.documents=reset: block '{cfg.model.block['name']}' cannot pass resets to its mixer "
            f"(its forward takes no resets= or its step no reset=); {fix} a block that passes them (prenorm)"
        )
    source = cfg.data.source["name"]
    if not getattr(registry.get("data", source).factory, "reports_documents", False):
        raise UserError(
            f"data.documents=reset: data source '{source}' does not report document starts "
            f"(reports_documents = False); {fix} a source that reports them"
        )


def check_existing_run(cfg: Any, world_size: int) -> None:
    """A run directory that already has a checkpoint resumes only with its own model and
    world size: refuse anything else before it is touched."""
    from pathlib import Path

    from zoo_core.config import load_config
    from zoo_core.loop import checkpoint

    run_dir = Path(cfg.runs_dir) / cfg.name
    found = checkpoint.latest(run_dir / "checkpoints")
    if found is None:
        return
    written_by = checkpoint.read_meta(found).get("world_size")
    if written_by != world_size:
        raise UserError(
            f"{found} was written by {written_by} ranks and this run has {world_size}; "
            f"the data-loader position is per rank, so resume with --nproc {written_by} "
            f"(eval, generate and export load it with any number of processes)"
        )
    if not (run_dir / "config.yaml").is_file():
        return
    saved = OmegaConf.to_container(load_config(str(run_dir / "config.yaml")).model)
    wanted = OmegaConf.to_container(cfg.model)
    if wanted.get("vocab_size") is None:
        saved.pop("vocab_size", None)
        wanted.pop("vocab_size", None)
    changed = _diff(saved, wanted, "model.")
    if changed:
        raise UserError(
            f"{run_dir} holds checkpoints of another model ({'; '.join(changed[:3])}); resume it with "
            f"its own model settings (zoo train {run_dir}), or give the new model another name="
        )


def _diff(old: Any, new: Any, prefix: str) -> list:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')} was {old}, now {new}"]
