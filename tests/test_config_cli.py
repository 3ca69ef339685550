"""`zoo config`, `zoo config --options` and `zoo --version` (issue #25)."""

import dataclasses
import subprocess
import sys

import yaml

from zoo_core.cli import main

SMALL = ["model.dim=32", "model.n_layers=2", "data.seq_len=32"]


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_config_prints_the_resolved_yaml_and_counts_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from zoo_core.config import resolve
    from zoo_core.loop.components import build_tokenizer, model_vocab
    from zoo_core.loop.model import meta_model
    from zoo_core.loop.train import run_config
    from zoo_core.registry import get_registry

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    before = _tree(tmp_path)
    assert main(["config", *SMALL, "model.mixer.name=hawk", "name=x"]) == 0
    out = capsys.readouterr().out
    assert _tree(tmp_path) == before  # no run directory, no config.yaml, nothing
    cfg = yaml.safe_load(out)  # the comments keep it valid YAML
    assert cfg["name"] == "x" and cfg["model"]["dim"] == 32
    assert cfg["model"]["mixer"]["name"] == "hawk" and "expand" in cfg["model"]["mixer"]  # resolved options
    assert cfg["model"]["vocab_size"] == 264  # derived from the byte tokenizer, as the run's config.yaml says

    reg = get_registry()
    resolved = resolve(run_config(None, [*SMALL, "model.mixer.name=hawk"]), reg)
    model = meta_model(resolved.model, reg, model_vocab(resolved, reg, build_tokenizer(resolved, reg)))
    comments = [line for line in out.splitlines() if line.startswith("#")]
    assert comments == [
        f"# params: {model.num_params():,} (non-embedding {model.num_params(False):,})",
        f"# decoding state: {model.state_size(32):,} bytes per sequence (after 32 tokens)",
        f"# FLOPs per token: {model.flops_per_token(32):.4g} (forward, at seq_len 32)",
    ]
    assert model.state_size(32) > 0 and model.flops_per_token(32) > 0


def test_config_of_a_yaml_file_is_what_train_would_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text("model:\n  dim: 48\n  mixer: mingru\n")
    assert main(["config", "my.yaml", "model.n_layers=3"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["model"]["dim"], cfg["model"]["n_layers"], cfg["model"]["mixer"]["name"]) == (48, 3, "mingru")
    assert main(["config", "--options", "my.yaml"]) == 0  # the file right after --options is the config
    assert "model.mixer.log_space" in _keys(capsys.readouterr().out)  # mingru's options


def test_config_refuses_a_bad_key_with_trains_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "model.dimm=32"]) == 2
    config_err = capsys.readouterr()
    assert main(["train", "model.dimm=32"]) == 2
    train_err = capsys.readouterr()
    assert config_err.err == train_err.err
    assert config_err.err.startswith("zoo: unknown config key 'model.dimm'; did you mean 'model.dim'?")
    assert config_err.err.count("\n") == 1 and config_err.out == ""
    assert main(["config", "optim.beta1=2"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert _tree(tmp_path) == []


def _keys(out):
    return {line.split()[0] for line in out.splitlines()[2:] if line.strip()}


def _leaf_keys(cls, prefix=""):
    from zoo_core.config import COMPONENTS

    keys = set()
    for f in dataclasses.fields(cls):
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            keys |= _leaf_keys(type(sub), f"{prefix}{f.name}.")
        elif (prefix.rstrip("."), f.name) in COMPONENTS:
            keys.add(f"{prefix}{f.name}.name")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def test_options_lists_every_key_of_runconfig_with_type_default_range_and_doc(capsys):
    from zoo_core.config import RunConfig

    assert main(["config", "--options"]) == 0
    out = capsys.readouterr().out
    keys = _keys(out)
    assert _leaf_keys(RunConfig) <= keys
    assert {"name", "model.dim", "optim.lr", "parallel.fsdp", "model.mixer.name"} <= keys
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "int" in rows["model.dim"] and "256" in rows["model.dim"] and ">= 1 and <= 1,048,576" in rows["model.dim"]
    assert "the hidden size" in rows["model.dim"]
    # the `#:` comment of the dataclass field is its doc
    assert "Sequences per optimizer step" in rows["train.global_batch"]
    assert "full_shard | no_shard | hybrid" in rows["parallel.fsdp"]
    # the chosen default components' own options are there too
    assert "model.mixer.head_dim" in keys and "data.source.path" in keys


def test_options_follow_the_chosen_mixer_and_a_prefix(capsys):
    assert main(["config", "--options", "model.mixer", "model.mixer.name=hawk"]) == 0
    out = capsys.readouterr().out
    keys = _keys(out)
    assert "model.mixer.expand" in keys and "model.mixer.head_dim" not in keys
    assert all(k.startswith("model.mixer") for k in keys)
    assert "RNN width as a multiple of dim" in out  # hawk's own field comment
    # an override right after --options is an override, not a prefix
    assert main(["config", "--options", "model.mixer.name=mingru"]) == 0
    keys = _keys(capsys.readouterr().out)
    assert "model.mixer.expand" in keys and "model.dim" in keys
    # pattern entries other than the mixer list their options too
    assert main(["config", "--options", "model.pattern", "model.pattern=[attention, hawk]"]) == 0
    assert "model.pattern[name=hawk].expand" in _keys(capsys.readouterr().out)
    assert main(["config", "--options", "modle."]) == 2
    assert capsys.readouterr().err.startswith("zoo: no config key starts with 'modle.'")


def test_train_help_points_to_config_options():
    out = subprocess.run(
        [sys.executable, "-m", "zoo_core.cli", "train", "--help"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "zoo config --options" in " ".join(out.stdout.split())


def test_version_names_zoo_and_torch_and_imports_no_torch():
    from importlib.metadata import version

    import zoo_core

    code = "import sys\nfrom zoo_core.cli import main\ncode = main(['--version'])\nprint('torch' in sys.modules, code)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first, last = out.stdout.strip().splitlines()
    assert first == f"zoo {zoo_core.__version__} (torch {version('torch')})"
    assert last == "False 0"


def test_docs_config_tables_are_generated_from_the_dataclasses_and_current():
    from pathlib import Path

    from zoo_core.commands.config import DOCS, REGENERATE, markdown_tables, render_docs
    from zoo_core.config import RANGES, RunConfig

    text = DOCS.read_text()
    tables = markdown_tables()
    for name in tables:  # every table is marked in the page
        assert f"<!-- generated: {name} " in text and f"<!-- end: {name} -->" in text, name
    assert render_docs(text) == text, f"docs/config.md is stale; regenerate it: {REGENERATE}"
    # every key of RunConfig, and every range, is in a generated table
    generated = "\n".join(tables.values())
    for key in _leaf_keys(RunConfig) | set(RANGES):
        assert f"| `{key}` |" in generated, key
    assert Path(DOCS).name == "config.md"


def test_a_stale_table_is_rewritten_and_the_prose_kept():
    from zoo_core.commands.config import markdown_tables, render_docs

    stale = "intro\n<!-- generated: optim (x) -->\n| old |\n<!-- end: optim -->\nprose after\n"
    new = render_docs(stale)
    assert new.startswith("intro\n<!-- generated: optim (x) -->\n")
    assert new.endswith("<!-- end: optim -->\nprose after\n")
    assert markdown_tables()["optim"] in new and "| old |" not in new
