"""mamba <-> transformers MambaForCausalLM, mamba2 <-> Mamba2ForCausalLM.

Both are stacks of x + mixer(RMSNorm(x)) with no MLP, as zoo's prenorm block with
mlp=false; the mixers' parameters are the same numbers under other names (the conv
weight gains a channel axis, Mamba-1's A_log is stored flat in zoo).
"""

from __future__ import annotations

import math
from typing import Any

from zoo_core import interop
from zoo_core.errors import UserError
from zoo_core.interop import HFMapping, Weights

MIXER = {
    "mamba": (
        "in_proj.weight",
        "in_proj.bias",
        "x_proj.weight",
        "dt_proj.weight",
        "dt_proj.bias",
        "D",
        "out_proj.weight",
        "out_proj.bias",
    ),
    "mamba2": ("in_proj.weight", "dt_bias", "A_log", "D", "norm.weight", "out_proj.weight"),
}


#: The mixer options both HF configs spell alike: (zoo option, HF config key, type); each
#: mapping's hf_config / zoo_options adds its own.
SHARED_OPTIONS = (
    ("d_state", "state_size", int),
    ("d_conv", "conv_kernel", int),
    ("expand", "expand", int),
    ("conv_bias", "use_conv_bias", bool),
)


class _MambaFamily(HFMapping):
    zoo_name = ""

    def refuse(self, m: Any) -> str | None:
        why = interop.refuse_shared(m, self.architecture)  # mamba2's gated norm_eps included
        if why:
            return why
        block, loss = interop.section(m, "block"), interop.section(m, "loss")
        if block.get("mlp"):
            return (
                f"model.block.mlp=true: {self.architecture} layers are mixer-only; "
                f"model.block.mlp=false (or unset) maps"
            )
        if loss.get("logit_softcap"):
            return f"model.loss.logit_softcap={loss['logit_softcap']} has no {self.architecture} counterpart; 0 maps"
        return None

    def _same(self, i: int) -> list[tuple[str, str]]:
        """(zoo name, HF name) of layer i's tensors that map unchanged; the conv weight and Mamba's
        A_log change shape and are mapped by hand."""
        z, h = f"layers.{i}.", f"backbone.layers.{i}."
        mixer = [(z + "mixer." + key, h + "mixer." + key) for key in MIXER[self.zoo_name]]
        return [(z + "mixer_norm.weight", h + "norm.weight"), *mixer, (z + "mixer.conv_bias", h + "mixer.conv1d.bias")]

    def to_hf(self, m: Any, w: Weights) -> tuple[dict[str, Any], Weights]:
        out = interop.ends_to_hf(m, w, "backbone.embeddings.weight", "backbone.norm_f.weight")
        for i in range(m.n_layers):
            z, h = f"layers.{i}.", f"backbone.layers.{i}."
            out.update({hk: w[zk] for zk, hk in self._same(i) if zk in w})
            out[h + "mixer.conv1d.weight"] = w[z + "mixer.conv_weight"][:, None]
            if self.zoo_name == "mamba":
                d_inner = w[z + "mixer.D"].shape[0]
                out[h + "mixer.A_log"] = w[z + "mixer.A_log"].view(d_inner, -1)
        common = dict(**interop.hf_sizes(m), layer_norm_epsilon=float(m.norm_eps), hidden_act="silu")
        o = interop.mixer_options(m)[0]
        shared = {hf: kind(o[zoo]) for zoo, hf, kind in SHARED_OPTIONS}
        return {**common, **shared, "residual_in_fp32": True, **self.hf_config(m, o)}, out

    def from_hf(self, c: Any, w: Weights) -> tuple[dict[str, Any], Weights]:
        if getattr(c, "hidden_act", "silu") != "silu":
            raise UserError(f"{self.architecture} hidden_act={c.hidden_act} has no zoo counterpart; silu maps")
        shared = {zoo: kind(getattr(c, hf)) for zoo, hf, kind in SHARED_OPTIONS}
        mixer = {"name": self.zoo_name, **self.zoo_options(c), **shared}
        model = interop.zoo_model(c, float(c.layer_norm_epsilon), mixer, block={"mlp": False})
        out = interop.ends_from_hf(c, w, "backbone.embeddings.weight", "backbone.norm_f.weight")
        for i in range(c.num_hidden_layers):
            z, h = f"layers.{i}.", f"backbone.layers.{i}."
            out.update({zk: w[hk] for zk, hk in self._same(i) if hk in w})
            out[z + "mixer.conv_weight"] = w[h + "mixer.conv1d.weight"][:, 0]
            if self.zoo_name == "mamba":
                out[z + "mixer.A_log"] = w[h + "mixer.A_log"].flatten()
        return model, out


class MambaMapping(_MambaFamily):
    mixers = ("mamba",)
    model_types = ("mamba",)
    architecture = "MambaForCausalLM"
    zoo_name = "mamba"

    def hf_config(self, m: Any, o: dict[str, Any]) -> dict[str, Any]:
        """Mamba's own config keys (to_hf adds the shared ones)."""
        return dict(time_step_rank=o["dt_rank"] or math.ceil(m.dim / 16), use_bias=o["bias"])

    def zoo_options(self, c: Any) -> dict[str, Any]:
        if c.intermediate_size != c.expand * c.hidden_size:
            raise UserError(f"Mamba intermediate_size={c.intermediate_size} is not expand * hidden_size; zoo needs it")
        return {"dt_rank": int(c.time_step_rank), "bias": bool(c.use_bias)}


class Mamba2Mapping(_MambaFamily):
    mixers = ("mamba2",)
    model_types = ("mamba2",)
    architecture = "Mamba2ForCausalLM"
    zoo_name = "mamba2"

    def hf_config(self, m: Any, o: dict[str, Any]) -> dict[str, Any]:
        """Mamba-2's own config keys (to_hf adds the shared ones)."""
        return dict(
            head_dim=o["headdim"],
            num_heads=o["expand"] * m.dim // o["headdim"],
            n_groups=o["ngroups"],
            chunk_size=o["chunk_size"],
            use_bias=False,
            time_step_limit=(0.0, float("inf")),
        )

    def zoo_options(self, c: Any) -> dict[str, Any]:
        if getattr(c, "use_bias", False):
            raise UserError("Mamba2 use_bias=true has no zoo counterpart (zoo mamba2 projections have no biases)")
        limit = tuple(getattr(c, "time_step_limit", (0.0, float("inf"))))
        if limit != (0.0, float("inf")):
            raise UserError(f"Mamba2 time_step_limit={limit} (dt clamping) has no zoo counterpart; (0.0, inf) maps")
        if c.num_heads * c.head_dim != int(c.expand * c.hidden_size):
            raise UserError(
                f"Mamba2 num_heads * head_dim = {c.num_heads * c.head_dim} is not expand * hidden_size; "
                f"zoo derives the heads from them"
            )
        return {
            "headdim": c.head_dim,
            "ngroups": c.n_groups,
            "chunk_size": c.chunk_size,
            "norm_eps": float(c.layer_norm_epsilon),
        }
