"""The models compared in `train_step.py`: zoo's (built through the registry,
as `zoo train` builds them) and the matching peers (built from config objects
with random init; no hub access).

Every builder returns (model, loss_fn, optimizer, note) where
loss_fn(model, inputs, targets) -> scalar loss. zoo models use zoo's own
optimizer (`zoo_core.optim.build_optimizer`: AdamW, decay on matrices only);
peers use `torch.optim.AdamW` with the same lr, betas, eps and weight decay.

The shape is the issue's: batch 8, seq 256, hidden 256, 4 layers, vocab 256.
Every choice that makes a peer match zoo's shape is written in SHAPE_NOTES
(and copied into the results file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Shape:
    """The matched shape of every model in one comparison."""

    dim: int = 256
    layers: int = 4
    vocab: int = 256
    heads: int = 4  # zoo attention: n_heads = dim // head_dim
    head_dim: int = 64
    mlp_hidden: int = 704  # zoo's SwiGLU hidden: swiglu_hidden(256, 2.6667) = 704
    # RG-LRU width: zoo's expand 1.3333 gives 341; 344 = 1.34375 * 256 divides into HF's 4 gate blocks
    hawk_width: int = 344
    ssm_layers: int = 4  # Mamba-1/2 stacks (no MLP between mixers)

    @property
    def hawk_expand(self) -> float:
        return self.hawk_width / self.dim


#: The issue's CPU shape: batch 8, seq 256, hidden 256, 4 layers, vocab 256.
CPU = Shape()
#: About 125M parameters (GPT-2 small's width, depth and padded vocab); Mamba-1/2 stack 24 mixers
#: without MLPs, as the Mamba papers' 130M models do. RG-LRU width 1.5 x dim divides into 12 blocks.
GPU_125M = replace(CPU, dim=768, layers=12, vocab=50304, heads=12, mlp_hidden=2048, hawk_width=1152, ssm_layers=24)
#: About 1.0B parameters (dim 2048, 18 layers, 32 heads of 64, SwiGLU 5472 = zoo's swiglu_hidden(2048)),
#: for attention's MFU; the other rows are not sized for it.
GPU_1B = replace(GPU_125M, dim=2048, layers=18, heads=32, mlp_hidden=5472, hawk_width=3072, ssm_layers=36)
GPU_SHAPES = {"125m": GPU_125M, "1b": GPU_1B}

DIM, LAYERS, VOCAB = CPU.dim, CPU.layers, CPU.vocab  # the CPU harness's names
LR, BETAS, EPS, WD = 3e-3, (0.9, 0.95), 1e-8, 0.1  # zoo's OptimConfig defaults, used for every model


def shape_notes(s: Shape = CPU) -> dict[str, str]:
    d, h, mlp, w = s.dim, s.heads, s.mlp_hidden, s.hawk_width
    return {
        "attention": f"{s.layers} layers. zoo attention: {h} heads x {s.head_dim}, RoPE, SDPA, SwiGLU {mlp}, tied "
        f"embeddings. HF LlamaForCausalLM: hidden {d}, {h} heads, {h} kv heads, intermediate {mlp}, "
        "rope_theta 1e4, rms_norm_eps 1e-5, tie_word_embeddings, attn_implementation sdpa.",
        "mamba2": f"{s.ssm_layers} layers. zoo mamba2: d_state 64, headdim 64 ({2 * d // 64} heads), expand 2, "
        f"ngroups 1, conv 4, chunk 64, no MLP. HF Mamba2ForCausalLM: hidden {d}, state_size 64, head_dim "
        f"64, num_heads {2 * d // 64}, expand 2, n_groups 1, conv_kernel 4, chunk_size 64, "
        "tie_word_embeddings (without mamba-ssm: HF's torch_forward).",
        "mamba": f"{s.ssm_layers} layers. zoo mamba: d_state 16, expand 2, conv 4, dt_rank {-(-d // 16)}, no MLP. "
        f"HF MambaForCausalLM: hidden {d}, state_size 16, expand 2, conv_kernel 4, time_step_rank "
        f"{-(-d // 16)}, tie_word_embeddings; without mamba-ssm HF runs slow_forward (the sequential "
        "reference path; use_mambapy=False is HF's default). "
        "The extra row `mamba (HF use_mambapy)` is HF with its parallel-scan option switched on.",
        "hawk": f"{s.layers} layers. zoo hawk: RG-LRU width {w} (model.mixer.expand={s.hawk_expand:g}), conv 4, c 8, "
        f"SwiGLU {mlp}. HF RecurrentGemmaForCausalLM with block_types=[recurrent]: lru_width {w}, "
        f"conv1d_width 4, {h} heads (the RG-LRU gates are block-diagonal in {h} blocks in HF, dense in zoo), "
        f"intermediate_size {2 * mlp} (HF halves it: gated MLP of width {mlp}).",
        "griffin": f"{s.layers} layers. zoo griffin preset: [hawk, hawk, local MQA attention (window 1024, 1 kv "
        f"head)], RG-LRU width {w}. HF RecurrentGemmaForCausalLM with its default block_types "
        f"[recurrent, recurrent, attention], attention_window_size 1024, {h} heads, 1 kv head, "
        f"lru_width {w}, intermediate_size {2 * mlp}.",
        "mingru": f"{s.layers} layers. zoo mingru: expand 1, log-space, no conv, no output gate, in_proj {d}->{2 * d}, "
        f"out_proj {d}->{d}, SwiGLU {mlp}. Peer: mingru-pytorch minGRU({d}, expansion_factor=1, "
        "proj_out=True) (same two projections) in the pre-norm residual LM below.",
        "minlstm": f"{s.layers} layers. zoo minlstm: as mingru, in_proj {d}->{3 * d}. Peer: mingru-pytorch "
        f"minLSTM({d}, expansion_factor=1, proj_out=True) in the same pre-norm residual LM.",
    }


def peer_lm_note(s: Shape = CPU) -> str:
    return (
        "Pre-norm residual LM for the mingru-pytorch peers (written in benchmarks/peers/models.py): "
        f"tied embedding, {s.layers} x [x + mixer(RMSNorm(x)); x + SwiGLU_{s.mlp_hidden}(RMSNorm(x))], "
        "final RMSNorm, tied head, cross-entropy; F.rms_norm eps 1e-5, the same structure as zoo's "
        "prenorm block."
    )


SHAPE_NOTES = shape_notes(CPU)
PEER_LM_NOTE = peer_lm_note(CPU)


# -- zoo ------------------------------------------------------------------------------------------------------

ZOO_OVERRIDES: dict[str, list[str]] = {
    "attention": ["model.mixer.name=attention"],
    "mamba2": ["model.mixer.name=mamba2"],
    "mamba": ["model.mixer.name=mamba"],
    "hawk": ["model.mixer.name=hawk"],
    "griffin": ["model.preset=griffin", "model.mixer.name=hawk"],
    "mingru": ["model.mixer.name=mingru"],
    "minlstm": ["model.mixer.name=minlstm"],
}
SSM = ("mamba", "mamba2")  # stacks of mixers without MLPs: shape.ssm_layers deep


def zoo_overrides(name: str, shape: Shape = CPU) -> list[str]:
    layers = shape.ssm_layers if name in SSM else shape.layers
    extra = [f"model.mixer.expand={shape.hawk_expand:g}"] if name in ("hawk", "griffin") else []
    return [
        f"model.dim={shape.dim}",
        f"model.n_layers={layers}",
        f"model.vocab_size={shape.vocab}",
        *ZOO_OVERRIDES[name],
        *extra,
    ]


def build_zoo(
    name: str, seq_len: int, compile: bool = False, shape: Shape = CPU, device: str = "cpu", extra: list[str] = ()
):
    from zoo_core.config import load_config, resolve
    from zoo_core.model import build_model
    from zoo_core.optim import build_optimizer
    from zoo_core.parallelize import use_cpu_linear
    from zoo_core.registry import get_registry

    registry = get_registry()
    overrides = [*zoo_overrides(name, shape), f"data.seq_len={seq_len}", *extra]
    cfg = resolve(load_config(None, overrides), registry)
    model = build_model(cfg, registry, shape.vocab, device)
    if device == "cpu":
        use_cpu_linear(model, cfg.parallel.cpu_linear)  # what zoo train does on CPU
    if compile:
        from zoo_core.parallelize import apply_compile

        apply_compile(model)  # what parallel.compile=true does: torch.compile per block
    model.train()

    def loss_fn(m, inputs, targets):
        return m(inputs, targets)[0].loss

    note = "zoo " + " ".join(overrides[3:]) + (" parallel.compile=true" if compile else "")
    return model, loss_fn, build_optimizer(model, cfg.optim), note


# -- HF transformers ------------------------------------------------------------------------------------------


def _hf_loss(m, inputs, targets):
    logits = m(input_ids=inputs, use_cache=False).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def build_hf(name: str, seq_len: int, mambapy: bool = False, shape: Shape = CPU, device: str = "cpu"):
    import transformers as tf

    s = shape
    layers = s.ssm_layers if name in SSM else s.layers
    common = dict(
        vocab_size=s.vocab,
        hidden_size=s.dim,
        num_hidden_layers=layers,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if name == "attention":
        cfg = tf.LlamaConfig(
            **common,
            num_attention_heads=s.heads,
            num_key_value_heads=s.heads,
            head_dim=s.head_dim,
            intermediate_size=s.mlp_hidden,
            max_position_embeddings=max(seq_len, 2048),
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            attn_implementation="sdpa",
        )
        model = tf.LlamaForCausalLM(cfg)
    elif name == "mamba2":
        cfg = tf.Mamba2Config(
            **common,
            state_size=64,
            expand=2,
            head_dim=64,
            num_heads=2 * s.dim // 64,
            n_groups=1,
            conv_kernel=4,
            chunk_size=64,
            use_bias=False,
            use_conv_bias=True,
            layer_norm_epsilon=1e-5,
        )
        model = tf.Mamba2ForCausalLM(cfg)
    elif name == "mamba":
        cfg = tf.MambaConfig(
            **common,
            state_size=16,
            expand=2,
            conv_kernel=4,
            time_step_rank=-(-s.dim // 16),
            use_bias=False,
            use_conv_bias=True,
            layer_norm_epsilon=1e-5,
            use_mambapy=mambapy,
        )
        model = tf.MambaForCausalLM(cfg)
    elif name in ("hawk", "griffin"):
        blocks = ["recurrent"] if name == "hawk" else ["recurrent", "recurrent", "attention"]
        cfg = tf.RecurrentGemmaConfig(
            **common,
            num_attention_heads=s.heads,
            num_key_value_heads=1,
            head_dim=s.head_dim,
            lru_width=s.hawk_width,
            intermediate_size=2 * s.mlp_hidden,
            conv1d_width=4,
            attention_window_size=1024,
            block_types=blocks,
            rms_norm_eps=1e-5,
        )
        model = tf.RecurrentGemmaForCausalLM(cfg)
    else:
        raise KeyError(name)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    note = f"transformers {tf.__version__} {type(model).__name__}" + (" use_mambapy=True" if mambapy else "")
    return model, _hf_loss, opt, note


# -- mingru-pytorch in a pre-norm residual LM ----------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.w_out = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        gate, value = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(gate) * value)


class PreNormLM(nn.Module):
    def __init__(self, make_mixer: Callable[[], nn.Module], shape: Shape = CPU) -> None:
        super().__init__()
        self.embed = nn.Embedding(shape.vocab, shape.dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "mixer_norm": RMSNorm(shape.dim),
                    "mixer": make_mixer(),
                    "mlp_norm": RMSNorm(shape.dim),
                    "mlp": SwiGLU(shape.dim, shape.mlp_hidden),
                }
            )
            for _ in range(shape.layers)
        )
        self.norm = RMSNorm(shape.dim)

    def forward(self, tokens, targets):
        x = self.embed(tokens)
        for layer in self.layers:
            x = x + layer["mixer"](layer["mixer_norm"](x))
            x = x + layer["mlp"](layer["mlp_norm"](x))
        logits = self.norm(x) @ self.embed.weight.t()
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def build_mingru_pytorch(name: str, seq_len: int, shape: Shape = CPU, device: str = "cpu"):
    from importlib.metadata import version

    from minGRU_pytorch.minGRU import minGRU
    from minGRU_pytorch.minLSTM import minLSTM  # not re-exported by the package

    cls = {"mingru": minGRU, "minlstm": minLSTM}[name]
    model = PreNormLM(lambda: cls(shape.dim, expansion_factor=1.0, proj_out=True), shape)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    return model, (lambda m, i, t: m(i, t)), opt, f"mingru-pytorch {version('minGRU-pytorch')} {cls.__name__}"


# -- the table's rows -----------------------------------------------------------------------------------------

#: (row, zoo mixer, peer label, peer builder(seq_len, **shape/device))
ROWS: list[tuple[str, str, str, Callable[..., Any]]] = [
    ("attention", "attention", "HF LlamaForCausalLM", lambda T, **kw: build_hf("attention", T, **kw)),
    ("mamba2", "mamba2", "HF Mamba2ForCausalLM", lambda T, **kw: build_hf("mamba2", T, **kw)),
    ("mamba", "mamba", "HF MambaForCausalLM", lambda T, **kw: build_hf("mamba", T, **kw)),
    (
        "mamba (HF use_mambapy)",
        "mamba",
        "HF MambaForCausalLM use_mambapy",
        lambda T, **kw: build_hf("mamba", T, True, **kw),
    ),
    ("hawk", "hawk", "HF RecurrentGemmaForCausalLM (recurrent blocks)", lambda T, **kw: build_hf("hawk", T, **kw)),
    ("griffin", "griffin", "HF RecurrentGemmaForCausalLM", lambda T, **kw: build_hf("griffin", T, **kw)),
    ("mingru", "mingru", "mingru-pytorch minGRU", lambda T, **kw: build_mingru_pytorch("mingru", T, **kw)),
    ("minlstm", "minlstm", "mingru-pytorch minLSTM", lambda T, **kw: build_mingru_pytorch("minlstm", T, **kw)),
]
