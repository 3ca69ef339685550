"""The registry: entry points, duplicates, broken plugins, API versions, env selection."""

import types

import pytest

from zoo_core import PLUGIN_API_VERSION, hookimpl
from zoo_core.errors import RegistryError
from zoo_core.registry import PluginWarning, Registry, build_registry


def plugin(name, api=PLUGIN_API_VERSION):
    mod = types.ModuleType(name)
    mod.zoo_api = api

    @hookimpl
    def register_mixers(register):
        register("same", object, None, "a test mixer")

    mod.register_mixers = register_mixers
    return mod


def test_core_defaults_register_through_hooks():
    reg = build_registry()
    assert reg.get("blocks", "prenorm").distribution == "zoo-core"
    assert reg.get("losses", "cross_entropy").plugin == "zoo-core.losses"  # one default plugin per kind
    assert "bytes" in reg.names("tokenizers") and "corpus" in reg.names("data")


def test_installed_attention_plugin_is_found_with_its_distribution():
    entry = build_registry().get("mixers", "attention")
    assert entry.distribution == "zoo-attention" and entry.config_cls is not None and entry.description


def other_mixer(name):
    mod = types.ModuleType(name)

    @hookimpl
    def register_mixers(register):
        register("other", object, None, "a mixer nobody else registers")

    mod.register_mixers = register_mixers
    return mod


def test_duplicate_names_fail_only_where_resolved_naming_both_distributions(monkeypatch):
    monkeypatch.delenv("ZOO_PREFER", raising=False)
    reg = Registry()
    reg.add_plugin(plugin("a"), "a", "dist-a", "1")
    reg.add_plugin(plugin("b"), "b", "dist-b", "1")
    reg.add_plugin(other_mixer("c"), "c", "dist-c", "1")
    reg.collect()  # loading does not fail
    assert reg.get("mixers", "other").distribution == "dist-c"  # other names still resolve
    with pytest.raises(RegistryError, match="dist-a and dist-b.*pip uninstall dist-b.*ZOO_PREFER=dist-a"):
        reg.get("mixers", "same")
    assert "same" not in reg.names("mixers") and set(reg.conflicts("mixers")) == {"same"}


def test_zoo_prefer_picks_one_of_the_duplicates(monkeypatch):
    monkeypatch.setenv("ZOO_PREFER", "dist-b")
    reg = Registry()
    reg.add_plugin(plugin("a"), "a", "dist-a", "1")
    reg.add_plugin(plugin("b"), "b", "dist-b", "1")
    reg.collect()
    assert reg.get("mixers", "same").distribution == "dist-b" and not reg.conflicts("mixers")


def test_incompatible_api_is_refused_with_both_versions():
    reg = Registry()
    with pytest.warns(PluginWarning, match=rf"old-plugin.*API 99.*API {PLUGIN_API_VERSION}"):
        reg.add_plugin(plugin("old", api=99), "old-plugin", "zoo-old", "0.1")
    assert "old-plugin" not in reg.plugins


def test_plugin_raising_in_hook_is_a_warning_and_others_work():
    bad = types.ModuleType("bad")

    @hookimpl
    def register_mixers(register):
        raise RuntimeError("boom")

    bad.register_mixers = register_mixers
    reg = Registry()
    reg.add_plugin(bad, "bad", "zoo-bad", "1")
    reg.add_plugin(plugin("good"), "good", "zoo-good", "1")
    with pytest.warns(PluginWarning, match="bad.*boom"):
        reg.collect()
    assert reg.names("mixers") == ["same"]


def test_disable_autoload_loads_only_named(monkeypatch):
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("ZOO_PLUGINS", "")
    assert build_registry().names("mixers") == []
    monkeypatch.setenv("ZOO_PLUGINS", "attention")
    assert build_registry().names("mixers") == ["attention"]


def test_plugin_failing_import_warns_and_rest_still_works(tmp_path, monkeypatch):
    # A real distribution on sys.path whose entry point raises at import.
    dist = tmp_path / "zoo_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[zoo]\nbroken = zoo_broken_mod\n")
    (tmp_path / "zoo_broken_mod.py").write_text("raise ImportError('needs a missing library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning, match=r"'broken' \(zoo-broken\).*needs a missing library"):
        reg = build_registry()
    assert "attention" in reg.names("mixers") and "broken" in reg.failed
