"""Hugging Face interop, checked against transformers itself: `zoo export --format hf`
loads in AutoModelForCausalLM with equal logits (float32 and float64) and greedy
generation; `zoo import` brings it back (and any checkpoint built from a transformers
config) with equal logits, as a run zoo eval / generate / train accept; what does not
map is refused in one line before anything is written."""

import json

import pytest
import torch

from zoo_core.cli import main
from zoo_core.testing.hf import (
    export_families,
    hf_float64,
    hf_logits,
    make_run,
    require_transformers,
    tokens,
)

tf = require_transformers()

BASE = ["model.dim=32", "model.n_layers=2"]
HAWK = [
    "model.mixer.name=hawk",
    "model.mixer.expand=1.0",
    "model.mixer.gate_heads=4",
    "model.mixer.reset_at_start=true",
    "model.block.mlp_act=gelu_tanh",
    "model.loss.logit_softcap=30",
]
FAMILIES = {
    "llama-gqa-tied": [
        "model.mixer.name=attention",
        "model.mixer.head_dim=8",
        "model.mixer.n_kv_heads=2",
        "model.mixer.rope_theta=500",
    ],
    "llama-untied": [
        "model.mixer.name=attention",
        "model.mixer.head_dim=16",
        "model.tie_embeddings=false",
        "model.block.mlp_bias=true",
    ],
    "mamba": ["model.mixer.name=mamba", "model.mixer.d_state=4"],
    "mamba2-groups": [
        "model.mixer.name=mamba2",
        "model.mixer.headdim=8",
        "model.mixer.ngroups=2",
        "model.mixer.d_state=8",
        "model.tie_embeddings=false",
    ],
    "hawk": HAWK + ["model.mixer.bias=true", "model.block.mlp_bias=true"],
    "griffin": HAWK
    + [
        "model.n_layers=3",
        "model.pattern=[hawk, hawk, {name: attention, window: 4, head_dim: 8, "
        "n_kv_heads: 1, rope_fraction: 0.5, out_bias: true}]",
    ],
}
HF_CLASS = {
    "llama-gqa-tied": "LlamaForCausalLM",
    "llama-untied": "LlamaForCausalLM",
    "mamba": "MambaForCausalLM",
    "mamba2-groups": "Mamba2ForCausalLM",
    "hawk": "RecurrentGemmaForCausalLM",
    "griffin": "RecurrentGemmaForCausalLM",
}


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every family: a run (random weights, moved off init) exported with the CLI."""
    return export_families(tmp_path_factory.mktemp("hf"), FAMILIES, BASE, main)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_loads_in_transformers_with_equal_logits(family, exported):
    from zoo_core.runs import load_run

    run, out = exported[family]
    assert json.loads((out / "config.json").read_text())["architectures"] == [HF_CLASS[family]]
    zoo = load_run(run, device="cpu").model
    x = tokens()
    hf = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == HF_CLASS[family]
    with torch.no_grad():
        assert rel(hf_logits(hf, x), zoo.logits(x)[0]) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_float64_export_equals_zoo_in_float64(family, exported, tmp_path):
    from zoo_core.runs import load_run

    run, _ = exported[family]
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf64"), "--dtype", "float64"]) == 0
    hf = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "hf64", dtype=torch.float64).eval()
    x = tokens()
    with torch.no_grad(), hf_float64():  # transformers kept in float64 throughout
        h = hf_logits(hf, x)
    zoo = load_run(run, device="cpu", dtype=torch.float64).model
    with torch.no_grad():
        z = zoo.logits(x)[0]
    # Llama's inverse RoPE frequencies are float32 on both sides, from different formulas
    # (1 / theta^x against theta^-x): they differ in the last bit for theta=500
    assert rel(h, z) < (1e-6 if family.startswith("llama") else 1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_import_of_the_export_gives_back_the_same_logits(family, exported, tmp_path):
    from zoo_core.runs import load_run

    run, out = exported[family]
    assert main(["import", str(out), "--name", "back", "--runs-dir", str(tmp_path)]) == 0
    x = tokens(seed=1)
    with torch.no_grad():
        back = load_run(tmp_path / "back", device="cpu").model.logits(x)[0]
        assert rel(back, load_run(run, device="cpu").model.logits(x)[0]) < 1e-5


@pytest.mark.parametrize("family", ["llama-gqa-tied", "mamba", "mamba2-groups", "hawk", "griffin"])
def test_greedy_generation_in_transformers_gives_zoos_tokens(family, exported):
    from zoo_core.generate import generate
    from zoo_core.runs import load_run

    run, out = exported[family]
    zoo = load_run(run, device="cpu", dtype=torch.float64).model
    prompt = tokens(T=6, B=1, seed=2)
    ours = generate(zoo, prompt.tolist(), max_new_tokens=10, temperature=0.0)[0]
    hf = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float64).eval()
    with hf_float64():
        # transformers 5.24: RecurrentGemma with recurrent blocks only fails with its cache on
        cache = {"use_cache": False} if family == "hawk" else {}
        theirs = hf.generate(prompt, max_new_tokens=10, do_sample=False, min_new_tokens=10, **cache)[0, 6:].tolist()
    assert theirs == ours


def test_bundled_byte_tokenizer_encodes_as_zoo(exported):
    from zoo_core.tokenizers import ByteTokenizer

    text = "ROMEO: But soft! What light — ünïcödé\n\tthrough yonder window"
    hf = tf.AutoTokenizer.from_pretrained(exported["mamba"][1])
    ids = hf.encode(text, add_special_tokens=False)
    assert ids == ByteTokenizer().encode(text)
    assert hf.decode(ids) == text
    assert hf.eos_token_id == 257 and hf.bos_token_id == 256


def test_bundled_hf_tokenizer_encodes_as_zoo(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from zoo_core.runs import load_run

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = "But soft, what light through yonder window breaks? It is the east, and Juliet is the sun. " * 4
    tok.train_from_iterator(
        [text],
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok.save(str(tmp_path / "tok.json"))
    run = make_run(
        tmp_path / "runs",
        "t",
        BASE
        + FAMILIES["mamba"]
        + ["data.tokenizer.name=hf", f"data.tokenizer.path={tmp_path / 'tok.json'}", "model.vocab_size=304"],
    )
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    hf = tf.AutoTokenizer.from_pretrained(tmp_path / "hf")
    sample = "Juliet is the sun; what light breaks? ünïcödé"
    zoo_tok = load_run(run, device="cpu").tokenizer
    assert hf.encode(sample, add_special_tokens=False) == zoo_tok.encode(sample)
    assert hf.eos_token == "<|endoftext|>"
    # and back: the imported run tokenizes with the bundled file
    assert main(["import", str(tmp_path / "hf"), "--name", "back", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert load_run(tmp_path / "runs" / "back", device="cpu").tokenizer.encode(sample) == zoo_tok.encode(sample)


def test_tokenizers_without_an_hf_form_are_not_bundled_and_say_so(tmp_path):
    from omegaconf import OmegaConf

    from zoo_core.interop import bundle_tokenizer

    cfg = OmegaConf.create({"data": {"tokenizer": {"name": "sentencepiece", "path": "m.model"}}})
    note = bundle_tokenizer(cfg, None, tmp_path, tf)
    assert note.startswith("tokenizer 'sentencepiece' was not bundled") and not (tmp_path / "tokenizer.json").exists()


def tiny_tokenizer_json(vocab: int) -> str:
    """A `tokenizers` file with `vocab` ids (the checkpoints built from configs have none)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())[: vocab - 1]
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[], unk_token=alphabet[0]))
    tok.add_special_tokens(["<eos>"])
    return tok.to_str()


def test_import_without_a_tokenizer_that_fits_is_refused(tmp_path, capsys):
    hf_from_config("mamba").save_pretrained(tmp_path / "src")  # vocab 64, no tokenizer.json: bytes do not fit
    capsys.readouterr()
    assert main(["import", str(tmp_path / "src"), "--name", "x", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tokenizer" in err and not (tmp_path / "runs" / "x").exists()


def test_a_third_party_plugin_adds_its_own_export():
    import types

    from zoo_core import hookimpl
    from zoo_core.config import load_config, resolve
    from zoo_core.interop import HFMapping, choose
    from zoo_core.registry import build_registry

    class MinGRUMapping(HFMapping):
        mixers, model_types, architecture = ("mingru",), ("my_mingru",), "MyMinGRUForCausalLM"

        def refuse(self, model_cfg):
            return None

    plugin = types.ModuleType("my_plugin")
    plugin.register_exports = hookimpl(lambda register: register("my_mingru", MinGRUMapping, None, "mine"))
    reg = build_registry()
    with pytest.raises(Exception, match="mingru"):  # nothing installed maps mingru
        choose(resolve(load_config(None, ["model.mixer.name=mingru"]), reg).model, reg)
    reg.add_plugin(plugin, "my-plugin", "my-plugin", "0")
    plugin.register_exports(register=reg._registrar("exports", reg.plugins["my-plugin"]))  # what collect() does
    cfg = resolve(load_config(None, ["model.mixer.name=mingru"]), reg)
    assert isinstance(choose(cfg.model, reg), MinGRUMapping)


def hf_from_config(family):
    """A transformers model built from a config (no hub), its biases and norms moved off init."""
    common = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "llama":
        cfg = tf.LlamaConfig(
            **common,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            intermediate_size=40,
            tie_word_embeddings=False,
        )
    elif family == "mamba":
        cfg = tf.MambaConfig(**common, state_size=4, expand=2, conv_kernel=3, use_bias=True)
    elif family == "mamba2":
        cfg = tf.Mamba2Config(**common, state_size=4, expand=2, head_dim=8, num_heads=8, n_groups=4, chunk_size=4)
    else:
        cfg = tf.RecurrentGemmaConfig(
            **common,
            num_attention_heads=4,
            num_key_value_heads=1,
            lru_width=48,
            intermediate_size=80,
            attention_window_size=5,  # partial RoPE (0.5), its default
            block_types=["recurrent", "attention", "recurrent"],
        )
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for _n, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("family", ["llama", "mamba", "mamba2", "recurrent_gemma"])
def test_import_of_a_transformers_model_built_from_a_config(family, tmp_path):
    from zoo_core.runs import load_run

    hf = hf_from_config(family)
    hf.save_pretrained(tmp_path / "src")
    (tmp_path / "src" / "tokenizer.json").write_text(tiny_tokenizer_json(64))
    assert main(["import", str(tmp_path / "src"), "--name", "imp", "--runs-dir", str(tmp_path / "runs")]) == 0
    x = torch.randint(3, 64, (2, 17))
    with torch.no_grad():
        ref = hf_logits(hf, x)
        assert rel(load_run(tmp_path / "runs" / "imp", device="cpu").model.logits(x)[0], ref) < 1e-5


@pytest.mark.parametrize(
    "overrides,words",
    [
        (["model.mixer.name=mingru"], "mingru"),
        (["model.mixer.name=hawk"], "gate_heads"),
        (["model.mixer.name=attention", "model.mixer.window=8"], "window"),
        (["model.mixer.name=attention", "model.mixer.position=learned"], "position"),
        (["model.mixer.name=attention", "model.mixer.conv=3"], "conv"),
        (["model.mixer.name=mamba", "model.loss.name=mtp"], "mtp"),
        (HAWK + ["model.mixer.reset_at_start=false"], "reset_at_start"),
    ],
)
def test_what_does_not_map_is_refused_in_one_line_before_writing(overrides, words, tmp_path, capsys):
    run = make_run(tmp_path / "runs", "r", BASE + overrides)
    out = tmp_path / "out"
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err
    assert not out.exists()


def test_an_imported_run_evaluates_and_trains_on(tmp_path, capsys):
    runs = tmp_path / "runs"
    from zoo_core.train import train

    run = make_run(runs, "base", BASE + FAMILIES["mamba"], perturb=0.1)
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert main(["import", str(tmp_path / "hf"), "data.seq_len=32", "--name", "ft", "--runs-dir", str(runs)]) == 0
    result = train(
        str(runs / "ft"),
        [
            "train.steps=2",
            "train.global_batch=2",
            "data.seq_len=32",
            "train.eval_every=0",
            "train.ckpt_every=2",
            "train.sample_tokens=0",
            "train.progress=false",
            "train.eval_batches=1",
        ],
    )
    assert result["step"] == 2 and (runs / "ft" / "checkpoints" / "step-00000002").is_dir()
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(runs / "ft"),
                "--batches",
                "1",
                "--batch-size",
                "1",
                "--seq-len",
                "32",
                "--splits",
                "val",
                "--json",
                "-",
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["step"] == 2 and report["splits"]["val"]["loss"] > 0
    assert main(["generate", str(runs / "ft"), "--prompt", "ROMEO:", "--max-tokens", "4", "--temperature", "0"]) == 0
    assert "ROMEO:" in capsys.readouterr().out


@pytest.mark.parametrize("family", ["llama-gqa-tied", "mamba", "mamba2-groups", "griffin"])
def test_a_trained_run_exports_with_equal_logits(family, tmp_path):
    """The issue's end to end: zoo train (two steps), export, transformers, the same logits."""
    from zoo_core.runs import load_run
    from zoo_core.train import train

    overrides = [
        f"runs_dir={tmp_path}",
        "name=t",
        *BASE,
        *FAMILIES[family],
        "train.steps=2",
        "train.global_batch=2",
        "data.seq_len=32",
        "train.eval_every=0",
        "train.ckpt_every=2",
        "train.sample_tokens=0",
        "train.progress=false",
        "train.eval_batches=1",
    ]
    train(None, overrides)
    assert main(["export", str(tmp_path / "t"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    hf = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    x = tokens(T=32)
    with torch.no_grad():
        assert rel(hf_logits(hf, x), load_run(tmp_path / "t", device="cpu").model.logits(x)[0]) < 1e-4
