"""Config merging and the one-line errors users see."""

import subprocess
import sys

import pytest

from zoo_core.config import load_config, resolve
from zoo_core.errors import UserError
from zoo_core.registry import get_registry


def zoo(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "zoo_core.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_order_defaults_yaml_then_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  dim: 64\n  n_layers: 3\n")
    cfg = load_config(str(cfg_file), ["model.dim=96"])
    assert cfg.model.dim == 96 and cfg.model.n_layers == 3 and cfg.optim.lr == 3e-3


def test_unknown_key_suggests_nearest():
    with pytest.raises(UserError, match="did you mean 'model.dim'"):
        load_config(None, ["model.dimm=64"])


def test_wrong_type_names_the_key():
    with pytest.raises(UserError, match="train.steps"):
        load_config(None, ["train.steps=many"])


def test_mixer_options_validated_against_plugin_dataclass():
    reg = get_registry()
    cfg = resolve(load_config(None, ["model.mixer.window=16"]), reg)
    assert cfg.model.mixer.window == 16 and cfg.model.mixer.head_dim == 64  # defaults filled in
    with pytest.raises(UserError, match="did you mean 'n_heads'"):
        resolve(load_config(None, ["model.mixer.n_head=2"]), reg)


def test_renaming_a_component_drops_old_options(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  mixer: {name: attention, window: 8}\n")
    cfg = load_config(str(cfg_file), ["model.mixer.name=other"])
    assert dict(cfg.model.mixer) == {"name": "other"}


def test_pattern_entries_inherit_and_override():
    reg = get_registry()
    cfg = resolve(
        load_config(
            None,
            ["model.n_layers=3", "model.mixer.head_dim=16", "model.pattern=[attention, {name: attention, window: 4}]"],
        ),
        reg,
    )
    assert [p["window"] for p in cfg.model.pattern] == [None, 4]
    assert all(p["head_dim"] == 16 for p in cfg.model.pattern)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["train", "model.dimm=64"], "did you mean 'model.dim'"),
        (["train", "model.mixer.name=nosuchmixer"], "installed mixers: attention"),
        (["train", "model.mixer.name=minlstm-x"], "unknown mixer"),
        (["trian"], "did you mean 'train'"),
        (["train", "no-equals-sign", "x"], "does not exist"),
    ],
)
def test_cli_errors_are_one_line_exit_2(args, expected, tmp_path):
    r = zoo(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in r.stderr


def test_preset_fills_defaults_and_user_settings_win(monkeypatch):
    reg = get_registry()
    from zoo_core.registry import Entry

    monkeypatch.setitem(
        reg._items["presets"],
        "two",
        Entry(
            "presets",
            "two",
            {"pattern": ["attention", {"name": "attention", "window": 4}], "n_layers": 6},
            None,
            "",
            "test",
            "test",
            "0",
        ),
    )
    cfg = resolve(load_config(None, ["model.preset=two"]), reg)
    assert cfg.model.n_layers == 6 and cfg.model.pattern[1]["window"] == 4
    cfg = resolve(load_config(None, ["model.preset=two", "model.n_layers=3", "model.pattern=[attention]"]), reg)
    assert cfg.model.n_layers == 3 and len(cfg.model.pattern) == 1


def test_data_sources_shorthand_is_a_mixture(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data:\n  sources: {books: 0.7, code: 0.3}\n")
    cfg = resolve(load_config(str(cfg_file)), get_registry())
    assert cfg.data.source.name == "mixture" and dict(cfg.data.source.sources) == {"books": 0.7, "code": 0.3}
    assert cfg.data.sources is None
