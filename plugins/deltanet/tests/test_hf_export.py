"""Whole-model export: a zoo model whose every layer is gated_deltanet (prenorm block, SwiGLU
MLP) <-> transformers' Qwen3NextForCausalLM (layer_types all linear_attention, every layer in
mlp_only_layers), through the core's export hook (`zoo export RUN --format hf`, `zoo import
DIR`). transformers is the oracle: built from a directory or a config, never a hub, on CPU
with its torch-only delta rule and conv (no fla, no causal-conv1d)."""

import json

import pytest
import torch
from deltanet_checks import import_qwen3_next, rel

import_qwen3_next()  # before anything loads it with fla's kernels bound

from zoo_core.cli import main  # noqa: E402
from zoo_core.testing.hf import (  # noqa: E402
    export_families,
    hf_float64,
    hf_logits,
    make_run,
    require_transformers,
    tokens,
)

tf = require_transformers()

BASE = ["model.dim=32", "model.n_layers=2", "model.mixer.name=gated_deltanet", "model.mixer.chunk_size=8"]
FAMILIES = {
    "tied": ["model.mixer.n_heads=2", "model.mixer.head_k_dim=8"],
    "untied": [
        "model.n_layers=3",
        "model.mixer.n_heads=3",
        "model.mixer.head_k_dim=4",
        "model.mixer.conv=2",
        "model.mixer.expand_v=1.5",
        "model.tie_embeddings=false",
        "model.norm_eps=1e-6",
        "model.block.norm_eps=1e-6",
        "model.mixer.norm_eps=1e-6",
        "model.block.mlp_hidden=40",
    ],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each family: a run (random weights moved off init: norms, decays, gates) exported with the CLI."""
    return export_families(tmp_path_factory.mktemp("qwen3next"), FAMILIES, BASE, main)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_is_an_all_linear_attention_dense_qwen3_next(family, exported):
    run, out = exported[family]
    cfg = json.loads((out / "config.json").read_text())
    n = 3 if family == "untied" else 2
    assert cfg["architectures"] == ["Qwen3NextForCausalLM"] and cfg["model_type"] == "qwen3_next"
    assert cfg["layer_types"] == ["linear_attention"] * n and cfg["mlp_only_layers"] == list(range(n))
    assert cfg["tie_word_embeddings"] == (family == "tied")
    hf = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert not any("experts" in k or "self_attn" in k for k in hf.state_dict())


@pytest.mark.parametrize("family", FAMILIES)
def test_export_loads_in_transformers_with_equal_logits(family, exported):
    from zoo_core.runs import load_run

    run, out = exported[family]
    zoo = load_run(run, device="cpu").model
    hf = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "Qwen3NextForCausalLM"
    x = tokens(T=40)
    with torch.no_grad():
        assert rel(hf_logits(hf, x), zoo.logits(x)[0]) < 1e-5  # measured 6e-7 and 1.4e-6 (T = 40)


@pytest.mark.parametrize("family", FAMILIES)
def test_float64_export_equals_zoo_in_float64(family, exported, tmp_path):
    from zoo_core.runs import load_run

    run, _ = exported[family]
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf64"), "--dtype", "float64"]) == 0
    hf = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "hf64", dtype=torch.float64).eval()
    x = tokens(T=40)  # transformers' chunks are 64: one partial chunk; zoo's are 8: five
    with torch.no_grad(), hf_float64():  # transformers kept in float64 throughout
        h = hf_logits(hf, x)
    zoo = load_run(run, device="cpu", dtype=torch.float64).model
    with torch.no_grad():
        z = zoo.logits(x)[0]
    assert rel(h, z) < 1e-12  # measured 1.3e-15 and 3e-15


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_in_transformers_gives_zoos_tokens(family, exported):
    """Twice: `generate` without a cache (transformers 5.25's `generate` fails with a cache that
    holds only linear-attention layers: DynamicCache.get_mask_sizes needs an attention layer),
    and a greedy loop over transformers' own cache, which decodes with its recurrent delta rule
    and conv-state update one token at a time (the masks passed ready-made, as none is needed)."""
    from zoo_core.generate import generate
    from zoo_core.runs import load_run

    run, out = exported[family]
    zoo = load_run(run, device="cpu", dtype=torch.float64).model
    prompt = tokens(T=6, B=1, seed=2)
    ours = generate(zoo, prompt.tolist(), max_new_tokens=10, temperature=0.0)[0]
    hf = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float64).eval()
    masks = {"full_attention": None, "linear_attention": None}
    with torch.no_grad(), hf_float64():
        plain = hf.generate(prompt, max_new_tokens=10, do_sample=False, min_new_tokens=10, use_cache=False)
        cache = tf.DynamicCache(config=hf.config)
        logits = hf(input_ids=prompt, cache=cache, use_cache=True, attention_mask=masks).logits
        cached = []
        for _ in range(10):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            cached.append(nxt.item())
            logits = hf(input_ids=nxt, cache=cache, use_cache=True, attention_mask=masks).logits
    assert plain[0, 6:].tolist() == ours
    assert cached == ours


@pytest.mark.parametrize("family", FAMILIES)
def test_import_of_the_export_gives_back_the_same_model(family, exported, tmp_path):
    from zoo_core.runs import load_run

    run, out = exported[family]
    assert main(["import", str(out), "--name", "back", "--runs-dir", str(tmp_path)]) == 0
    back, orig = load_run(tmp_path / "back", device="cpu"), load_run(run, device="cpu")
    assert back.cfg.model.mixer.name == "gated_deltanet" and back.cfg.model.tie_embeddings == (family == "tied")
    x = tokens(seed=1)
    with torch.no_grad():
        assert rel(back.model.logits(x)[0], orig.model.logits(x)[0]) < 1e-5
    ours, theirs = orig.model.state_dict(), back.model.state_dict()
    assert set(ours) == set(theirs)
    # the same weights, the norms' to float32 rounding: exported as fl(w - 1), imported as 1 + fl(w - 1)
    assert max(rel(theirs[k], ours[k]) for k in ours) < 1e-6


def qwen3_next_from_config(**kw):
    """A Qwen3-Next causal LM built from a config (no hub), its 1-d parameters moved off init."""
    common = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=3,
        intermediate_size=40,
        layer_types=["linear_attention"] * 3,
        mlp_only_layers=[0, 1, 2],
        linear_num_key_heads=2,
        linear_num_value_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=16,
        linear_conv_kernel_dim=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(tf.Qwen3NextConfig(**{**common, **kw}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def tiny_tokenizer_json(vocab: int) -> str:
    """A `tokenizers` file with `vocab` ids (as tests/test_hf_interop.py writes one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())[: vocab - 1]
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[], unk_token=alphabet[0]))
    tok.add_special_tokens(["<eos>"])
    return tok.to_str()


def test_import_of_a_qwen3_next_built_from_a_config(tmp_path):
    from zoo_core.runs import load_run

    hf = qwen3_next_from_config()
    hf.save_pretrained(tmp_path / "src")
    (tmp_path / "src" / "tokenizer.json").write_text(tiny_tokenizer_json(64))
    assert main(["import", str(tmp_path / "src"), "--name", "imp", "--runs-dir", str(tmp_path / "runs")]) == 0
    x = torch.randint(3, 64, (2, 17))
    with torch.no_grad():
        assert rel(load_run(tmp_path / "runs" / "imp", device="cpu").model.logits(x)[0], hf_logits(hf, x)) < 1e-5


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"layer_types": ["linear_attention", "full_attention", "linear_attention"]}, "full_attention"),
        (
            {
                "mlp_only_layers": [0, 2],
                "num_experts": 4,
                "num_experts_per_tok": 2,
                "moe_intermediate_size": 8,
                "shared_expert_intermediate_size": 8,
            },
            "mixture-of-experts",
        ),
        ({"linear_num_value_heads": 4}, "linear_num_value_heads"),
    ],
)
def test_what_zoo_cannot_express_is_refused_on_import_in_one_line(kw, words, tmp_path, capsys):
    qwen3_next_from_config(**kw).save_pretrained(tmp_path / "src")
    assert main(["import", str(tmp_path / "src"), "--name", "imp", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("zoo: ") and words in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "imp").exists()


@pytest.mark.parametrize(
    "overrides,words",
    [
        (["model.mixer.name=deltanet"], "deltanet"),  # no decay: no transformers counterpart
        (["model.preset=gdn-hybrid", "model.n_layers=4"], "gated_deltanet+attention"),
        (["model.block.mlp=false"], "model.block.mlp=false"),
        (["model.block.mlp_act=gelu_tanh"], "mlp_act"),
        (["model.block.mlp_bias=true"], "mlp_bias"),
        (["model.mixer.norm_eps=1e-6"], "model.mixer.norm_eps"),
        (["model.loss.logit_softcap=30"], "logit_softcap"),
        (["model.pattern=[{name: gated_deltanet, n_heads: 2}, {name: gated_deltanet, n_heads: 4}]"], "n_heads"),
    ],
)
def test_what_does_not_map_is_refused_on_export_in_one_line_before_writing(overrides, words, tmp_path, capsys):
    run = make_run(tmp_path / "runs", "r", BASE + overrides)
    out = tmp_path / "out"
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("zoo: ") and words in err and "Traceback" not in err
    assert not out.exists()
