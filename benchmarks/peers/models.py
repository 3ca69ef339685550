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

from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

DIM, LAYERS, VOCAB = 256, 4, 256
HEADS, HEAD_DIM = 4, 64  # zoo attention: n_heads = dim // head_dim
MLP_HIDDEN = 704  # zoo's SwiGLU hidden: swiglu_hidden(256, 2.6667) = 704
HAWK_WIDTH = 344  # RG-LRU width: zoo's expand 1.3333 gives 341; 344 = 1.34375 * 256 divides into HF's 4 gate blocks
LR, BETAS, EPS, WD = 3e-3, (0.9, 0.95), 1e-8, 0.1  # zoo's OptimConfig defaults, used for every model

SHAPE_NOTES = {
    "attention": f"zoo attention: {HEADS} heads x {HEAD_DIM}, RoPE, SDPA, SwiGLU {MLP_HIDDEN}, tied embeddings. "
                 f"HF LlamaForCausalLM: hidden {DIM}, {HEADS} heads, {HEADS} kv heads, intermediate {MLP_HIDDEN}, "
                 "rope_theta 1e4, rms_norm_eps 1e-5, tie_word_embeddings, attn_implementation sdpa.",
    "mamba2": "zoo mamba2: d_state 64, headdim 64 (8 heads), expand 2, ngroups 1, conv 4, chunk 64, no MLP. "
              "HF Mamba2ForCausalLM: hidden 256, state_size 64, head_dim 64, num_heads 8, expand 2, n_groups 1, "
              "conv_kernel 4, chunk_size 64, tie_word_embeddings (CPU: HF's torch_forward).",
    "mamba": "zoo mamba: d_state 16, expand 2, conv 4, dt_rank 16, no MLP. HF MambaForCausalLM: hidden 256, "
             "state_size 16, expand 2, conv_kernel 4, time_step_rank 16, tie_word_embeddings; CPU runs HF's "
             "slow_forward (the sequential reference path; use_mambapy=False is HF's default). "
             "The extra row `mamba (HF use_mambapy)` is HF with its parallel-scan option switched on.",
    "hawk": f"zoo hawk: RG-LRU width {HAWK_WIDTH} (model.mixer.expand=1.34375), conv 4, c 8, SwiGLU {MLP_HIDDEN}. "
            f"HF RecurrentGemmaForCausalLM with block_types=[recurrent]: lru_width {HAWK_WIDTH}, conv1d_width 4, "
            f"{HEADS} heads (the RG-LRU gates are block-diagonal in {HEADS} blocks in HF, dense in zoo), "
            f"intermediate_size {2 * MLP_HIDDEN} (HF halves it: gated MLP of width {MLP_HIDDEN}).",
    "griffin": f"zoo griffin preset: [hawk, hawk, local MQA attention (window 1024, 1 kv head)], RG-LRU width "
               f"{HAWK_WIDTH}. HF RecurrentGemmaForCausalLM with its default block_types "
               f"[recurrent, recurrent, attention], attention_window_size 1024, {HEADS} heads, 1 kv head, "
               f"lru_width {HAWK_WIDTH}, intermediate_size {2 * MLP_HIDDEN}.",
    "mingru": f"zoo mingru: expand 1, log-space, no conv, no output gate, in_proj 256->512, out_proj 256->256, "
              f"SwiGLU {MLP_HIDDEN}. Peer: mingru-pytorch minGRU(256, expansion_factor=1, proj_out=True) "
              "(same two projections) in the pre-norm residual LM below.",
    "minlstm": f"zoo minlstm: as mingru, in_proj 256->768. Peer: mingru-pytorch minLSTM(256, expansion_factor=1, "
               "proj_out=True) in the same pre-norm residual LM.",
}
PEER_LM_NOTE = ("Pre-norm residual LM for the mingru-pytorch peers (written in benchmarks/peers/models.py): "
                f"tied embedding, {LAYERS} x [x + mixer(RMSNorm(x)); x + SwiGLU_{MLP_HIDDEN}(RMSNorm(x))], "
                "final RMSNorm, tied head, cross-entropy; F.rms_norm eps 1e-5, the same structure as zoo's "
                "prenorm block.")


# -- zoo ------------------------------------------------------------------------------------------------------

ZOO_OVERRIDES: Dict[str, List[str]] = {
    "attention": ["model.mixer.name=attention"],
    "mamba2": ["model.mixer.name=mamba2"],
    "mamba": ["model.mixer.name=mamba"],
    "hawk": ["model.mixer.name=hawk", "model.mixer.expand=1.34375"],
    "griffin": ["model.preset=griffin", "model.mixer.name=hawk", "model.mixer.expand=1.34375"],
    "mingru": ["model.mixer.name=mingru"],
    "minlstm": ["model.mixer.name=minlstm"],
}


def build_zoo(name: str, seq_len: int, compile: bool = False):
    from zoo_core.config import load_config, resolve
    from zoo_core.model import build_model
    from zoo_core.parallelize import use_cpu_linear
    from zoo_core.optim import build_optimizer
    from zoo_core.registry import get_registry

    registry = get_registry()
    overrides = [f"model.dim={DIM}", f"model.n_layers={LAYERS}", f"model.vocab_size={VOCAB}",
                 f"data.seq_len={seq_len}", *ZOO_OVERRIDES[name]]
    cfg = resolve(load_config(None, overrides), registry)
    model = build_model(cfg, registry, VOCAB, "cpu")
    use_cpu_linear(model, cfg.parallel.cpu_linear)  # what zoo train does on CPU
    if compile:
        from zoo_core.parallelize import apply_compile
        apply_compile(model)  # what parallel.compile=true does: torch.compile per block
    model.train()

    def loss_fn(m, inputs, targets):
        return m(inputs, targets)[0].loss

    note = "zoo " + " ".join(ZOO_OVERRIDES[name]) + (" parallel.compile=true" if compile else "")
    return model, loss_fn, build_optimizer(model, cfg.optim), note


# -- HF transformers ------------------------------------------------------------------------------------------

def _hf_loss(m, inputs, targets):
    logits = m(input_ids=inputs, use_cache=False).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def build_hf(name: str, seq_len: int, mambapy: bool = False):
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=DIM, num_hidden_layers=LAYERS, tie_word_embeddings=True,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if name == "attention":
        cfg = tf.LlamaConfig(**common, num_attention_heads=HEADS, num_key_value_heads=HEADS, head_dim=HEAD_DIM,
                             intermediate_size=MLP_HIDDEN, max_position_embeddings=max(seq_len, 2048),
                             rms_norm_eps=1e-5, rope_theta=10000.0, attn_implementation="sdpa")
        model = tf.LlamaForCausalLM(cfg)
    elif name == "mamba2":
        cfg = tf.Mamba2Config(**common, state_size=64, expand=2, head_dim=64, num_heads=2 * DIM // 64,
                              n_groups=1, conv_kernel=4, chunk_size=64, use_bias=False, use_conv_bias=True,
                              layer_norm_epsilon=1e-5)
        model = tf.Mamba2ForCausalLM(cfg)
    elif name == "mamba":
        cfg = tf.MambaConfig(**common, state_size=16, expand=2, conv_kernel=4, time_step_rank=16,
                             use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5, use_mambapy=mambapy)
        model = tf.MambaForCausalLM(cfg)
    elif name in ("hawk", "griffin"):
        blocks = ["recurrent"] if name == "hawk" else ["recurrent", "recurrent", "attention"]
        cfg = tf.RecurrentGemmaConfig(**common, num_attention_heads=HEADS, num_key_value_heads=1,
                                      head_dim=HEAD_DIM, lru_width=HAWK_WIDTH, intermediate_size=2 * MLP_HIDDEN,
                                      conv1d_width=4, attention_window_size=1024, block_types=blocks,
                                      rms_norm_eps=1e-5)
        model = tf.RecurrentGemmaForCausalLM(cfg)
    else:
        raise KeyError(name)
    model.train()
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
    def __init__(self, make_mixer: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"mixer_norm": RMSNorm(DIM), "mixer": make_mixer(),
                           "mlp_norm": RMSNorm(DIM), "mlp": SwiGLU(DIM, MLP_HIDDEN)})
            for _ in range(LAYERS))
        self.norm = RMSNorm(DIM)

    def forward(self, tokens, targets):
        x = self.embed(tokens)
        for layer in self.layers:
            x = x + layer["mixer"](layer["mixer_norm"](x))
            x = x + layer["mlp"](layer["mlp_norm"](x))
        logits = self.norm(x) @ self.embed.weight.t()
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def build_mingru_pytorch(name: str, seq_len: int):
    from importlib.metadata import version

    from minGRU_pytorch.minGRU import minGRU
    from minGRU_pytorch.minLSTM import minLSTM  # not re-exported by the package
    cls = {"mingru": minGRU, "minlstm": minLSTM}[name]
    model = PreNormLM(lambda: cls(DIM, expansion_factor=1.0, proj_out=True))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    return model, (lambda m, i, t: m(i, t)), opt, f"mingru-pytorch {version('minGRU-pytorch')} {cls.__name__}"


# -- the table's rows -----------------------------------------------------------------------------------------

#: (row, zoo mixer, peer label, peer builder)
ROWS: List[Tuple[str, str, str, Callable[..., Any]]] = [
    ("attention", "attention", "HF LlamaForCausalLM", lambda T: build_hf("attention", T)),
    ("mamba2", "mamba2", "HF Mamba2ForCausalLM", lambda T: build_hf("mamba2", T)),
    ("mamba", "mamba", "HF MambaForCausalLM", lambda T: build_hf("mamba", T)),
    ("mamba (HF use_mambapy)", "mamba", "HF MambaForCausalLM use_mambapy", lambda T: build_hf("mamba", T, True)),
    ("hawk", "hawk", "HF RecurrentGemmaForCausalLM (recurrent blocks)", lambda T: build_hf("hawk", T)),
    ("griffin", "griffin", "HF RecurrentGemmaForCausalLM", lambda T: build_hf("griffin", T)),
    ("mingru", "mingru", "mingru-pytorch minGRU", lambda T: build_mingru_pytorch("mingru", T)),
    ("minlstm", "minlstm", "mingru-pytorch minLSTM", lambda T: build_mingru_pytorch("minlstm", T)),
]
