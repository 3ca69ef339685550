"""Hugging Face transformers interop: `zoo export RUN --format hf` and `zoo import DIR`.

The core knows no architecture here either. A plugin registers an `HFMapping`
(hook `register_exports`) under the transformers `model_type` it writes; the
mapping turns a zoo config and state dict into a transformers config and state
dict, and back. The core picks the mapping whose `mixers` cover the model's
layers, asks it to refuse what it cannot express (one line, before anything is
written), writes the directory through transformers itself (so the keys and
shapes are checked by the class that will load them), and bundles the tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from zoo_core.config import layer_mixers
from zoo_core.errors import UserError

Weights = dict[str, Tensor]


class HFMapping:
    """One family's mapping between zoo models and a transformers causal LM."""

    #: zoo mixers it can express: every layer of an exported model must be one of them.
    mixers: tuple[str, ...] = ()
    #: transformers `model_type`s it imports (and the first, which it exports).
    model_types: tuple[str, ...] = ()
    #: The transformers class that loads the export, e.g. "LlamaForCausalLM".
    architecture: str = ""

    def refuse(self, model_cfg: Any) -> str | None:
        """Why this model cannot be written exactly (one line naming the option and what
        would map), or None."""
        raise NotImplementedError

    def to_hf(self, model_cfg: Any, weights: Weights) -> tuple[dict[str, Any], Weights]:
        """(transformers config kwargs, transformers state dict) for a model `refuse` passed."""
        raise NotImplementedError

    def from_hf(self, hf_config: Any, weights: Weights) -> tuple[dict[str, Any], Weights]:
        """(zoo `model` config section, zoo state dict) for a transformers config object
        and its state dict; raise UserError (one line) for what zoo cannot express."""
        raise NotImplementedError


# -- helpers every mapping uses (no architecture in them) --------------------------------------


def mixer_options(model_cfg: Any) -> list[dict[str, Any]]:
    return [dict(m) for m in layer_mixers(model_cfg)]


def section(model_cfg: Any, key: str) -> dict[str, Any]:
    value = model_cfg[key]
    return OmegaConf.to_container(value) if not isinstance(value, dict) else dict(value)


def refuse_unless_prenorm(model_cfg: Any, target: str) -> str | None:
    """The core's pre-norm block and cross-entropy head are what the HF families share."""
    block, loss = section(model_cfg, "block"), section(model_cfg, "loss")
    if block.get("name") != "prenorm":
        return f"model.block.name={block.get('name')} has no {target} counterpart; only the prenorm block maps"
    if loss.get("name") != "cross_entropy":
        return (
            f"model.loss.name={loss.get('name')} has no {target} counterpart (MTP and other extra heads "
            f"are not exported); only the cross_entropy head maps"
        )
    return None


def same_options(options: list[dict[str, Any]], target: str, what: str) -> str | None:
    """HF configs hold one set of mixer options for all layers."""
    first = options[0]
    for i, o in enumerate(options[1:], 1):
        if o != first:
            diff = sorted(k for k in set(o) | set(first) if o.get(k) != first.get(k))
            return (
                f"layer {i}'s {what} options differ from layer 0's ({', '.join(diff)}); {target} holds one set "
                f"for every layer: give all layers the same options"
            )
    return None


def refuse_eps(model_cfg: Any, target: str, *extra: tuple[str, float]) -> str | None:
    """HF families hold one norm epsilon for every norm."""
    eps = float(model_cfg.norm_eps)
    for name, value in (("model.block.norm_eps", section(model_cfg, "block").get("norm_eps", eps)), *extra):
        if float(value) != eps:
            return f"{name}={value} differs from model.norm_eps={eps}; {target} holds one norm epsilon: set them equal"
    return None


def head_weights(model_cfg: Any, weights: Weights) -> Tensor:
    return weights["embed.weight"] if model_cfg.tie_embeddings else weights["head.proj.weight"]


def refuse_shared(model_cfg: Any, target: str) -> str | None:
    """What the HF families hold once, refused in one line (or None): the core's prenorm block and
    cross_entropy head (`refuse_unless_prenorm`), one set of options per mixer for every layer of it
    (`same_options`), one norm epsilon, a mixer's own `norm_eps` included (`refuse_eps`)."""
    options = mixer_options(model_cfg)
    why = refuse_unless_prenorm(model_cfg, target)
    for name in dict.fromkeys(o["name"] for o in options):
        why = why or same_options([o for o in options if o["name"] == name], target, name)
    mixer_eps = [("model.mixer.norm_eps", o["norm_eps"]) for o in options if "norm_eps" in o]
    return why or refuse_eps(model_cfg, target, *mixer_eps)


def hf_sizes(model_cfg: Any) -> dict[str, Any]:
    """The transformers config fields every causal LM has, from zoo's `model` section."""
    return dict(
        vocab_size=model_cfg.vocab_size,
        hidden_size=model_cfg.dim,
        num_hidden_layers=model_cfg.n_layers,
        tie_word_embeddings=bool(model_cfg.tie_embeddings),
    )


def zoo_model(
    hf_config: Any, norm_eps: float, mixer: dict[str, Any], block: dict[str, Any], loss: dict[str, Any] | None = None
) -> dict[str, Any]:
    """zoo's `model` section for a transformers config: its sizes and tied or untied embeddings,
    `mixer`, the prenorm block with `block`'s options, the cross_entropy head with `loss`'s, and
    one norm epsilon for every norm."""
    return {
        "dim": hf_config.hidden_size,
        "n_layers": hf_config.num_hidden_layers,
        "vocab_size": hf_config.vocab_size,
        "tie_embeddings": bool(hf_config.tie_word_embeddings),
        "norm_eps": norm_eps,
        "mixer": mixer,
        "block": {"name": "prenorm", **block, "norm_eps": norm_eps},
        "loss": {"name": "cross_entropy", **(loss or {})},
    }


def ends_to_hf(model_cfg: Any, weights: Weights, embed: str, norm: str, norm_offset: float = 0.0) -> Weights:
    """The embedding, final norm and head under transformers' names `embed`, `norm` and
    `lm_head.weight`; `norm_offset` 1 for a family whose RMSNorm scales by (1 + weight)."""
    final = weights["norm.weight"] - norm_offset if norm_offset else weights["norm.weight"]
    return {embed: weights["embed.weight"], norm: final, "lm_head.weight": head_weights(model_cfg, weights)}


def ends_from_hf(hf_config: Any, weights: Weights, embed: str, norm: str, norm_offset: float = 0.0) -> Weights:
    """The inverse of `ends_to_hf`: zoo's embedding, final norm and (untied) head."""
    final = weights[norm] + norm_offset if norm_offset else weights[norm]
    out = {"embed.weight": weights[embed], "norm.weight": final}
    if not hf_config.tie_word_embeddings:
        out["head.proj.weight"] = weights["lm_head.weight"]
    return out


def mlp_to_hf(weights: Weights, z: str, h: str) -> Weights:
    """Layer prefix `z`'s SwiGLU MLP (the core's fused `w_in` = [gate; up], and `w_out`) as
    transformers' `{h}gate_proj`, `{h}up_proj` and `{h}down_proj` weights and biases, where present."""
    out = {}
    for suffix in ("weight", "bias"):
        if z + f"mlp.w_in.{suffix}" in weights:
            gate, up = weights[z + f"mlp.w_in.{suffix}"].split(weights[z + "mlp.w_out.weight"].shape[1])
            out.update(
                {
                    h + f"gate_proj.{suffix}": gate,
                    h + f"up_proj.{suffix}": up,
                    h + f"down_proj.{suffix}": weights[z + f"mlp.w_out.{suffix}"],
                }
            )
    return out


def mlp_from_hf(weights: Weights, z: str, h: str) -> Weights:
    """The inverse of `mlp_to_hf`."""
    out = {}
    for suffix in ("weight", "bias"):
        if h + f"gate_proj.{suffix}" in weights:
            gate_up = [weights[h + f"gate_proj.{suffix}"], weights[h + f"up_proj.{suffix}"]]
            out[z + f"mlp.w_in.{suffix}"] = torch.cat(gate_up)
            out[z + f"mlp.w_out.{suffix}"] = weights[h + f"down_proj.{suffix}"]
    return out


# -- choosing a mapping ------------------------------------------------------------------------------


def mappings(registry: Any) -> list[tuple[str, HFMapping]]:
    return [(e.name, e.factory()) for e in registry.entries("exports")]


def choose(model_cfg: Any, registry: Any) -> HFMapping:
    names = [m["name"] for m in mixer_options(model_cfg)]
    wanted = list(dict.fromkeys(names))
    found = mappings(registry)
    candidates = [m for _, m in found if set(wanted) <= set(m.mixers)]
    if not candidates:
        have = ", ".join(f"{'+'.join(m.mixers)} -> {m.architecture}" for _, m in found) or "none installed"
        raise UserError(
            f"no Hugging Face export maps mixer {'+'.join(wanted)} (exports: {have}); "
            f"export it with --format safetensors instead"
        )
    refusals = []
    for m in sorted(candidates, key=lambda m: m.mixers[0] != wanted[0]):  # the family keyed on layer 0's mixer first
        why = m.refuse(model_cfg)
        if why is None:
            return m
        refusals.append(f"{m.architecture}: {why}")
    raise UserError(f"cannot export to Hugging Face: {refusals[0]}")


def for_model_type(model_type: str, registry: Any) -> HFMapping:
    found = mappings(registry)
    for _, m in found:
        if model_type in m.model_types:
            return m
    have = ", ".join(t for _, m in found for t in m.model_types) or "none"
    raise UserError(f"no zoo plugin imports transformers model_type '{model_type}' (importable: {have})")


def require_transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a directory, never a hub
    try:
        import transformers
    except ImportError:
        raise UserError("Hugging Face interop needs transformers: pip install 'zoo-core[hf]'") from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # zoo prints its own one line
    return transformers


# -- export -----------------------------------------------------------------------------------------------


def export_hf(run_dir: Path, out_dir: Path | None = None, dtype: torch.dtype | None = None) -> tuple[Path, str]:
    """Write RUN's latest checkpoint as a transformers directory. Returns (dir, tokenizer note)."""
    from zoo_core.config import load_config, resolve
    from zoo_core.loop.runs import load_run
    from zoo_core.registry import get_registry

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"'{run_dir}' is not a run directory (no config.yaml); runs live in runs/<name>")
    registry = get_registry()
    cfg = resolve(load_config(str(run_dir / "config.yaml")), registry)
    mapping = choose(cfg.model, registry)  # refuses before anything is loaded or written
    tf = require_transformers()
    run = load_run(run_dir, device="cpu")
    # mapped in float64 (the RecurrentGemma scale, norm offsets), rounded once to the output dtype
    weights = {k: v.detach().to(torch.float64).clone() for k, v in run.model.state_dict().items()}
    hf_kwargs, hf_weights = mapping.to_hf(run.cfg.model, weights)
    tok = run.tokenizer
    for key, value in (
        ("bos_token_id", getattr(tok, "bos_id", None)),
        ("eos_token_id", getattr(tok, "eos_id", None)),
        ("pad_token_id", getattr(tok, "pad_id", None)),
    ):
        hf_kwargs.setdefault(key, value)
    config = tf.AutoConfig.for_model(mapping.model_types[0], **hf_kwargs)
    config.architectures = [mapping.architecture]
    out_dtype = dtype or torch.float32
    model = getattr(tf, mapping.architecture)(config).to(out_dtype)  # before loading: no float32 detour
    missing, unexpected = model.load_state_dict({k: v.to(out_dtype) for k, v in hf_weights.items()}, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ()) if config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:  # a mapping bug, not a user error
        raise RuntimeError(
            f"{type(mapping).__name__} wrote keys transformers does not expect: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}"
        )
    out_dir = Path(out_dir) if out_dir else run_dir / "hf"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        note = bundle_tokenizer(run.cfg, tok, tmp, tf)
        (tmp / "zoo.json").write_text(
            json.dumps(
                {
                    "run": str(run_dir),
                    "checkpoint": run.checkpoint.name,
                    "step": run.step,
                    "mapping": type(mapping).__name__,
                },
                indent=1,
            )
        )
        out_dir.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir, note


def bundle_tokenizer(cfg: Any, tok: Any, out: Path, tf: Any) -> str:
    """tokenizer.json (+ tokenizer_config.json) when the tokenizer has a `tokenizers` form."""
    opts = OmegaConf.to_container(cfg.data.tokenizer)
    name = opts.get("name")
    if name == "hf":
        source = Path(opts["path"]).expanduser().read_text()
    elif name == "bytes":
        source = byte_tokenizer_json()
    else:
        return f"tokenizer '{name}' was not bundled: it has no Hugging Face tokenizers form (hf and bytes do)"
    from tokenizers import Tokenizer

    fast = tf.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(source))
    specials = {}
    for attr, key in (("bos_id", "bos_token"), ("eos_id", "eos_token"), ("pad_id", "pad_token")):
        i = getattr(tok, attr, None)
        if i is not None and fast.convert_ids_to_tokens(i) is not None:
            specials[key] = fast.convert_ids_to_tokens(i)
    fast.add_special_tokens(specials) if specials else None
    fast.save_pretrained(out)
    return f"tokenizer '{name}' bundled as tokenizer.json"


def byte_tokenizer_json() -> str:
    """zoo's byte tokenizer (ids 0-255 = UTF-8 bytes; BOS 256, EOS 257, PAD 258) as a byte-level
    BPE with no merges: every byte is its own token, with its own value as id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()  # the 256 printable stand-ins for bytes, in GPT-2's byte order
    byte_char = _bytes_to_unicode()
    vocab = {byte_char[b]: b for b in range(256)}
    assert set(vocab) == set(alphabet)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<bos>", "<eos>", "<pad>"])  # ids 256, 257, 258
    return tok.to_str()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


# -- import -----------------------------------------------------------------------------------------------


def import_hf(src: Path, name: str | None = None, runs_dir: str = "runs", overrides: Sequence[str] = ()) -> Path:
    """A transformers directory as a zoo run: config.yaml plus a weights-only step-0 checkpoint
    that `zoo eval`, `zoo generate` and `zoo train` (continued, fresh optimizer) accept."""
    from zoo_core.config import merge, parse_overrides, resolve, save_config
    from zoo_core.loop import checkpoint
    from zoo_core.loop.distributed import World
    from zoo_core.loop.model import build_model
    from zoo_core.registry import get_registry

    src = Path(src)
    if not (src / "config.json").is_file():
        raise UserError(f"'{src}' is not a transformers directory (no config.json); give one save_pretrained wrote")
    model_type = json.loads((src / "config.json").read_text()).get("model_type", "?")
    registry = get_registry()
    mapping = for_model_type(model_type, registry)
    tf = require_transformers()
    hf = tf.AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float64)
    hf_weights = {k: v.detach() for k, v in hf.state_dict().items()}
    model_section, weights = mapping.from_hf(hf.config, hf_weights)
    name = name or src.resolve().name
    run_dir = Path(runs_dir) / name
    if (run_dir / "config.yaml").exists():
        raise UserError(f"run '{run_dir}' already exists; pick another --name or delete it")
    data: dict[str, Any] = {}
    if (src / "tokenizer.json").is_file():  # checked from the source; the run gets its own copy below
        data["tokenizer"] = {"name": "hf", "path": str((src / "tokenizer.json").resolve())}
    cfg = merge(
        [{"name": name, "runs_dir": str(runs_dir), "model": model_section, "data": data}, parse_overrides(overrides)]
    )
    cfg = resolve(cfg, registry)
    from zoo_core.loop.components import build_tokenizer

    tok_vocab = build_tokenizer(cfg, registry).vocab_size
    if tok_vocab > cfg.model.vocab_size:
        raise UserError(
            f"'{src}' has no tokenizer.json and its vocabulary ({cfg.model.vocab_size}) is smaller than "
            f"the run's tokenizer's ({tok_vocab}); pass data.tokenizer.name=... options that fit it"
        )
    model = build_model(cfg, registry, cfg.model.vocab_size)
    model.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, strict=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if "tokenizer" in data:
        shutil.copyfile(src / "tokenizer.json", run_dir / "tokenizer.json")
        cfg.data.tokenizer.path = str((run_dir / "tokenizer.json").resolve())
    checkpoint.save(
        run_dir / "checkpoints",
        0,
        model,
        None,
        World(),
        {"step": 0, "imported_from": str(src)},
        {},
        meta={"weights_only": True, "imported_from": str(src), "model_type": model_type},
    )
    save_config(cfg, run_dir / "config.yaml")
    return run_dir
