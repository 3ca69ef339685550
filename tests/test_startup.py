"""Start-up without torch (issue #25): `zoo --help`, `zoo plugins`, `zoo list` and a config error
answer without importing torch; `zoo plugins` and `zoo list` read the registry's cached catalog
(zoo_core.registry.catalog) and say the same as a fresh build. Timings: benchmarks/startup.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zoo_core import registry as registry_module

PROBE = """
import contextlib, io, sys
from zoo_core.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
sys.__stdout__.write(out.getvalue())
sys.__stdout__.write(f"\\n#probe {code} {'torch' in sys.modules} {err.getvalue().strip()!r}\\n")
"""


def probe(args, cache):
    """(exit status, torch imported?, stdout, stderr) of `zoo ARGS` in a fresh interpreter."""
    env = {**os.environ, "ZOO_CACHE": str(cache)}
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    body, _, last = r.stdout.rpartition("\n#probe ")
    code, torch, err = last.strip().split(" ", 2)
    return int(code), torch == "True", body, eval(err)  # noqa: S307  (our own repr)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache whose registry catalog the first `zoo plugins` wrote (that one builds the registry)."""
    cache = tmp_path_factory.mktemp("zoo-cache")
    code, torch, first, _ = probe(["plugins"], cache)
    assert code == 0 and torch  # a miss builds the registry, which imports the plugins and torch
    assert (cache / "registry-catalog.json").is_file()
    return cache, first


@pytest.mark.parametrize(
    "args, code",
    [
        (["--help"], 0),
        (["plugins"], 0),
        (["list", "mixers"], 0),
        (["list", "specs"], 0),
        (["config", "model.dimm=32"], 2),  # a config error: unknown key
        (["config", "optim.beta1=2"], 2),  # out of range
        (["train", "model.dim=abc"], 2),  # a wrong type, through zoo train
    ],
)
def test_these_answer_without_importing_torch(warm_cache, args, code):
    cache, _ = warm_cache
    got, torch, out, err = probe(args, cache)
    assert got == code, (out, err)
    assert not torch, f"zoo {' '.join(args)} imported torch"
    if code == 2:
        assert err.startswith("zoo: ") and err.count("\n") == 0  # the usual one line


def test_zoo_config_asked_again_answers_from_its_cache_without_torch(warm_cache, tmp_path):
    """The first `zoo config` for some arguments fills plugin options and counts parameters (torch);
    the same question again is answered from the cache, the same bytes, without torch; editing a
    file the config names (here the YAML itself) asks torch again."""
    cache, _ = warm_cache
    yaml = tmp_path / "my.yaml"
    yaml.write_text("model:\n  dim: 48\n")
    args = ["config", str(yaml), "model.mixer.name=hawk"]
    code, torch, first, _ = probe(args, cache)
    assert code == 0 and torch and "dim: 48" in first and "# params:" in first
    code, torch, again, _ = probe(args, cache)
    assert code == 0 and not torch and again == first
    yaml.write_text("model:\n  dim: 64\n")
    code, torch, edited, _ = probe(args, cache)
    assert code == 0 and torch and "dim: 64" in edited


def test_plugins_and_list_from_the_catalog_say_what_a_fresh_build_says(warm_cache):
    cache, first = warm_cache
    assert probe(["plugins"], cache)[2] == first
    for name in ("attention", "hawk", "mamba2", "mingru", "deltanet"):
        assert name in first
    fresh_list = subprocess.run(
        [sys.executable, "-c", "from zoo_core.registry import get_registry as g; print(g().names('mixers'))"],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.strip()
    listed = probe(["list", "mixers"], cache)[2]
    assert fresh_list and all(name in listed for name in eval(fresh_list))  # noqa: S307


def test_the_catalog_key_follows_what_a_registration_depends_on(tmp_path, monkeypatch):
    key = registry_module.catalog_key()
    assert registry_module.catalog_key() == key  # stable
    monkeypatch.setenv("ZOO_PREFER", "zoo-somebody")
    assert registry_module.catalog_key() != key  # the preference decides conflicts
    monkeypatch.delenv("ZOO_PREFER")
    # an edited source file of a package changes its stamp (an editable plugin being edited)
    pkg = tmp_path / "zoo_probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = registry_module._source_stamp("zoo_probe_pkg")
    (pkg / "plugin.py").write_text("y = 2\n")
    assert registry_module._source_stamp("zoo_probe_pkg") != before
    assert registry_module._source_stamp("zoo_no_such_package") == ["zoo_no_such_package", None]


def test_a_process_with_a_built_registry_answers_from_it(monkeypatch, tmp_path):
    from zoo_core.registry import Catalog, catalog, get_registry

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    reg = get_registry()
    cat = catalog()
    assert isinstance(cat, Catalog) and not (tmp_path / "registry-catalog.json").exists()
    assert [e.name for e in cat.entries("mixers")] == reg.names("mixers")
    assert Catalog.from_json(cat.to_json()) == cat  # what the cache file holds round-trips
