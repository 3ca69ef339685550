"""Run configuration: structured dataclasses merged by OmegaConf.

Order: dataclass defaults, then a YAML file, then `key=value` overrides.
Component sections (`model.mixer`, `model.block`, `model.loss`,
`data.source`, `data.tokenizer`, and each `model.pattern` entry) are
`{name: ..., **options}`; once the name is resolved in the registry, the
options are validated against that plugin's config dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo_core.errors import UserError, did_you_mean, nearest
from zoo_core.registry import SINGULAR


@dataclass
class ModelConfig:
    dim: int = 256
    n_layers: int = 4
    #: The mixer used by every layer, unless `pattern` is set.
    mixer: dict[str, Any] = field(default_factory=lambda: {"name": "attention"})
    #: Hybrids: a per-layer list repeated up to n_layers, e.g.
    #: [hawk, hawk, {name: attention, window: 128}]. Entries named like `mixer`
    #: inherit its options.
    pattern: list[Any] | None = None
    #: A registered preset (e.g. griffin) that sets the model keys it names.
    preset: str | None = None
    block: dict[str, Any] = field(default_factory=lambda: {"name": "prenorm"})
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "cross_entropy"})
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    init_std: float = 0.02
    #: Derived from the tokenizer (rounded up to a multiple of 8) when unset.
    vocab_size: int | None = None


@dataclass
class DataConfig:
    source: dict[str, Any] = field(default_factory=lambda: {"name": "corpus"})
    tokenizer: dict[str, Any] = field(default_factory=lambda: {"name": "bytes"})
    seq_len: int = 256
    #: Shorthand for a weighted mixture of corpora, {books: 0.7, code: 0.3}: the same as
    #: source: {name: mixture, sources: {...}} (keys are prepared directories or corpora).
    sources: dict[str, float] | None = None
    #: Where prepared shards are cached; default ~/.cache/zoo (or $ZOO_CACHE).
    cache_dir: str | None = None
    #: stream | reset: state flows across document boundaries, or each document starts from a fresh state.
    documents: str = "stream"


@dataclass
class OptimConfig:
    lr: float = 3e-3
    lr_min_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    steps: int = 600
    #: Sequences per optimizer step, over all ranks and accumulation steps.
    global_batch: int = 32
    #: Sequences per forward on one rank; default: global_batch / world size.
    micro_batch: int | None = None
    seed: int = 0
    device: str = "auto"
    #: Carry recurrent state across steps, per stream (truncated BPTT).
    carry_state: bool = False
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 16
    eval_batch_size: int = 16
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    sample_tokens: int = 200
    sample_prompt: str = "ROMEO:"
    #: torch threads on CPU; 0 keeps torch's default.
    threads: int = 0
    #: CPU runs: glibc keeps freed memory for reuse instead of page-faulting big tensors in again.
    keep_freed_memory: bool = True
    #: Bitwise-reproducible kernels (slower); exact resume is tested with it.
    deterministic: bool = False
    progress: bool = True
    tensorboard: bool = False
    wandb: bool = False


@dataclass
class ParallelConfig:
    #: full_shard | no_shard | hybrid (FSDP2 under torchrun; ignored on one process).
    fsdp: str = "full_shard"
    #: none | bf16: bf16 compute with fp32 parameters and gradient reduction.
    mixed_precision: str = "none"
    compile: bool = False
    #: none | full | selective (every other block).
    activation_checkpointing: str = "none"
    #: CPU float32 linear layers: auto (oneDNN or aten per shape, by a cached measurement,
    #: zoo_core/loop/cpu/linear.py) | onednn | aten.
    cpu_linear: str = "auto"


@dataclass
class RunConfig:
    name: str = "default"
    runs_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


#: Sections holding a `{name: ..., **options}` component, with their registry kind.
COMPONENTS = {
    ("model", "mixer"): "mixers",
    ("model", "block"): "blocks",
    ("model", "loss"): "losses",
    ("data", "source"): "data",
    ("data", "tokenizer"): "tokenizers",
}
CHOICES = {
    ("data", "documents"): ("stream", "reset"),
    ("parallel", "fsdp"): ("full_shard", "no_shard", "hybrid"),
    ("parallel", "mixed_precision"): ("none", "bf16"),
    ("parallel", "activation_checkpointing"): ("none", "full", "selective"),
    ("parallel", "cpu_linear"): ("auto", "onednn", "aten"),
}

#: The allowed range of every numeric field: (low, high, what it is). Both ends are
#: inclusive; None leaves that side open (finite numbers only). docs/config.md lists the same ranges.
#: The upper ends only catch typos (a size or count no run could reach), so that
#: nothing impossible is ever allocated; the model as a whole is checked against
#: the machine's memory before it is built (zoo_core/loop/validate.py).
MAX_COUNT = 10**9
RANGES: dict[str, tuple[float, float | None, str]] = {
    "model.dim": (1, 2**20, "the hidden size"),
    "model.n_layers": (1, 10**5, "the number of blocks"),
    "model.norm_eps": (0.0, 1.0, "the final RMSNorm epsilon"),
    "model.init_std": (0.0, 10.0, "the embedding init std"),
    "model.vocab_size": (1, 2**31 - 1, "the vocabulary size"),
    "data.seq_len": (1, 2**24, "tokens per training window"),
    "optim.lr": (0.0, None, "the peak learning rate (0 freezes the weights)"),
    "optim.lr_min_ratio": (0.0, 1.0, "the final fraction of the peak learning rate"),
    "optim.warmup_steps": (0, MAX_COUNT, "warmup steps"),
    "optim.weight_decay": (0.0, None, "the weight decay"),
    "optim.beta1": (0.0, 1.0, "AdamW's beta1"),
    "optim.beta2": (0.0, 1.0, "AdamW's beta2"),
    "optim.eps": (0.0, 1.0, "AdamW's epsilon"),
    "optim.grad_clip": (0.0, None, "the gradient-norm clip (0 disables it)"),
    "train.steps": (0, MAX_COUNT, "optimizer steps"),
    "train.global_batch": (1, 2**24, "sequences per optimizer step"),
    "train.micro_batch": (1, 2**24, "sequences per forward on one rank"),
    "train.seed": (0, 2**63 - 1, "the random seed"),
    "train.log_every": (1, MAX_COUNT, "steps between metrics records"),
    "train.eval_every": (0, MAX_COUNT, "steps between validations (0: only at the end)"),
    "train.eval_batches": (1, MAX_COUNT, "validation windows per stream"),
    "train.eval_batch_size": (1, 2**24, "validation streams"),
    "train.ckpt_every": (0, MAX_COUNT, "steps between checkpoints (0: only at the end)"),
    "train.keep_checkpoints": (0, MAX_COUNT, "checkpoints kept (0 keeps all)"),
    "train.sample_tokens": (0, 2**24, "tokens sampled at the end (0: none)"),
    "train.threads": (0, 2**16, "torch CPU threads (0: torch's default)"),
}
#: Open ends: these must be strictly above their low end (a zero epsilon divides by zero).
EXCLUSIVE_LOW = {"model.norm_eps", "optim.eps", "model.init_std"}
EXCLUSIVE_HIGH = {"optim.beta1", "optim.beta2"}


# -- reading -----------------------------------------------------------------


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise UserError(f"override '{item}' is not key=value; write it like model.dim=128")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except Exception as exc:  # OmegaConf's own errors, and YAML's on a value like {
        raise UserError(
            f"could not parse overrides {' '.join(overrides)}: {_first_line(exc)}; "
            f"quote YAML values, e.g. 'model.pattern=[attention, hawk]'"
        ) from None


def read_yaml(path: str | Path) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist; give a YAML path, or only key=value overrides")
    try:
        data = OmegaConf.load(path)
    except Exception as exc:
        raise UserError(f"config file '{path}' is not valid YAML: {_first_line(exc)}") from None
    if not isinstance(data, DictConfig):
        raise UserError(f"config file '{path}' must hold a mapping at the top level")
    return data


def check_keys(user: Any, schema: type = RunConfig, prefix: str = "") -> None:
    """Unknown keys get the nearest valid key, before OmegaConf sees them."""
    if not isinstance(user, (dict, DictConfig)):
        return
    fields = {f.name: f for f in dataclasses.fields(schema)}
    keys: list[Any] = list(user)
    for key in keys:
        full = f"{prefix}{key}"
        if key not in fields:
            best = nearest(key, fields)
            hint = f"; did you mean '{prefix}{best}'?" if best else ""
            raise UserError(
                f"unknown config key '{full}'{hint} "
                f"(valid keys under {prefix.rstrip('.') or 'the top level'}: {', '.join(fields)})"
            )
        sub = _dataclass_type(fields[key])
        if sub is not None:
            check_keys(user[key], sub, f"{full}.")


def _dataclass_type(f: dataclasses.Field[Any]) -> type | None:
    return f.default_factory if dataclasses.is_dataclass(f.default_factory) else None


def merge(layers: Sequence[Any]) -> DictConfig:
    """Merge config layers over the defaults. A layer that renames a component
    (say model.mixer.name=hawk) drops the options lower layers gave the old one."""
    cfg: DictConfig = OmegaConf.structured(RunConfig)
    for layer in layers:
        check_keys(layer)
        layer = (
            OmegaConf.create(OmegaConf.to_container(layer))
            if isinstance(layer, DictConfig)
            else OmegaConf.create(layer)
        )
        layer = cast(DictConfig, layer)  # a mapping: read_yaml and parse_overrides return one
        for section, key in COMPONENTS:
            new = OmegaConf.select(layer, f"{section}.{key}")
            if isinstance(new, str):  # shorthand: model.mixer=hawk
                layer[section][key] = {"name": new}
                new = layer[section][key]
            if new is not None and not isinstance(new, DictConfig):
                raise UserError(
                    f"{section}.{key}={new} is neither a name nor {{name: ..., options}}; "
                    f"write it like {section}.{key}.name=<name>"
                )
            if new is not None and "name" in new and new.name != cfg[section][key].get("name"):
                cfg[section][key] = {}
        try:
            cfg = cast(DictConfig, OmegaConf.merge(cfg, layer))
        except OmegaConfBaseException as exc:
            raise UserError(_omegaconf_message(exc)) from None
    for (section, key), allowed in CHOICES.items():
        value = cfg[section][key]
        if value not in allowed:
            raise UserError(f"{section}.{key}={value} is not one of {', '.join(allowed)}{did_you_mean(value, allowed)}")
    check_ranges(cfg)
    return cfg


def check_ranges(cfg: Any) -> None:
    """Every numeric field inside its documented range, before anything uses it."""
    import math

    for key, (low, high, what) in RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}={value!r} is not a number; {key} is {what}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key}={value} is not a finite number; {key} is {what} ({_range_text(key)})")
        too_low = value <= low if key in EXCLUSIVE_LOW else value < low
        too_high = high is not None and (value >= high if key in EXCLUSIVE_HIGH else value > high)
        if too_low or too_high:
            raise UserError(
                f"{key}={value} is out of range: {key} is {what} and must be {_range_text(key)} "
                f"(docs/config.md lists every range)"
            )


def _range_text(key: str) -> str:
    low, high, _ = RANGES[key]
    lo = f"> {low}" if key in EXCLUSIVE_LOW else f">= {low}"
    if high is None:
        return f"{lo} and finite"
    hi = f"< {high}" if key in EXCLUSIVE_HIGH else f"<= {high:,}" if isinstance(high, int) else f"<= {high:g}"
    return f"{lo} and {hi}"


def load_config(path: str | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    layers: list[Any] = []
    if path:
        layers.append(read_yaml(path))
    layers.append(parse_overrides(overrides))
    return merge(layers)


# -- resolving plugin options --------------------------------------------------


def validate_options(kind_label: str, options: dict[str, Any], config_cls: type | None) -> dict[str, Any]:
    """Validate a component's options against its dataclass; return them with defaults filled."""
    name = options.get("name")
    rest = {k: v for k, v in options.items() if k != "name"}
    if config_cls is None:
        if rest:
            raise UserError(f"{kind_label} '{name}' takes no options, got: {', '.join(rest)}")
        return {"name": name}
    valid = [f.name for f in dataclasses.fields(config_cls)]
    for key in rest:
        if key not in valid:
            raise UserError(
                f"unknown option '{key}' for {kind_label} '{name}'{did_you_mean(key, valid)} "
                f"(valid options: {', '.join(valid) or 'none'})"
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(config_cls), rest)
    except OmegaConfBaseException as exc:
        raise UserError(f"{kind_label} '{name}': {_omegaconf_message(exc)}") from None
    return {"name": name, **_plain(merged, resolve=True)}


def _plain(node: Any, resolve: bool = False) -> dict[str, Any]:
    """A mapping node as a plain dict (OmegaConf types the result as any container)."""
    return cast(dict[str, Any], OmegaConf.to_container(node, resolve=resolve))


def to_dataclass(options: dict[str, Any], config_cls: type | None) -> Any:
    """The plugin's config object for resolved options."""
    if config_cls is None:
        return None
    rest = {k: v for k, v in dict(options).items() if k != "name"}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config_cls), rest))


def resolve(cfg: DictConfig, registry: Any) -> DictConfig:
    """Resolve every component name in the registry and validate its options.

    Returns a new config in which each component holds all of its options, so the
    config written to the run directory says exactly what was trained."""
    cfg = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(cfg)))  # plain, so plugin keys fit
    model = cfg.model
    if model.preset:
        preset = registry.get("presets", model.preset).factory
        defaults = OmegaConf.structured(ModelConfig)
        for key, value in dict(preset).items():
            if key not in model:
                raise UserError(f"preset '{model.preset}' sets unknown model key '{key}'")
            # The preset fills what the user left at its default; the user's own settings win.
            if model[key] == defaults[key]:
                model[key] = value
    if cfg.data.sources:
        source = _plain(cfg.data.source)
        if source.get("name") not in ("corpus", "mixture"):
            raise UserError(
                f"data.sources mixes corpora, but data.source.name is '{source.get('name')}'; remove one of the two"
            )
        rest = {k: v for k, v in source.items() if k not in ("name", "path", "sources")}
        cfg.data.source = {"name": "mixture", **rest, "sources": OmegaConf.to_container(cfg.data.sources)}
        cfg.data.sources = None
    for (section, key), kind in COMPONENTS.items():
        opts = _plain(cfg[section][key])
        if not opts.get("name"):
            raise UserError(
                f"{section}.{key}.name is missing; set it, e.g. {section}.{key}.name=<one of: "
                f"{', '.join(registry.names(kind))}>"
            )
        entry = registry.get(kind, opts["name"])
        cfg[section][key] = validate_options(SINGULAR[kind], opts, entry.config_cls)
    if model.pattern is not None:
        if len(model.pattern) == 0:
            raise UserError("model.pattern is empty; list at least one mixer, or set it to null")
        base = _plain(model.mixer)
        resolved = []
        for item in model.pattern:
            entry_opts: Any = {"name": item} if isinstance(item, str) else OmegaConf.to_container(item)
            if not isinstance(entry_opts, dict) or "name" not in entry_opts:
                raise UserError(f"model.pattern entry {item} needs a name, e.g. {{name: attention, window: 128}}")
            if entry_opts["name"] == base["name"]:
                entry_opts = {**base, **entry_opts}
            entry = registry.get("mixers", entry_opts["name"])
            resolved.append(validate_options("mixer", entry_opts, entry.config_cls))
        model.pattern = resolved
    return cfg


def layer_mixers(model_cfg: Any) -> list[dict[str, Any]]:
    """The resolved mixer options for each of the n_layers layers."""
    if model_cfg.pattern is None:
        return [
            _plain(model_cfg.mixer) if not isinstance(model_cfg.mixer, dict) else dict(model_cfg.mixer)
        ] * model_cfg.n_layers
    pattern = [_plain(p) if not isinstance(p, dict) else p for p in model_cfg.pattern]
    return [pattern[i % len(pattern)] for i in range(model_cfg.n_layers)]


def save_config(cfg: DictConfig, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg))
    tmp.replace(path)


# -- messages -------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = _first_line(exc)
    if key:
        return f"{key}: {msg}"
    return msg
