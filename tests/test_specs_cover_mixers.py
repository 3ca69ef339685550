"""Every mixer that the in-repo plugins register has a row in the comparison specs that say
"every in-repo architecture" (benchmarks/scaling/cpu-tiny.yaml, demo.yaml) and in the recall
benchmark (benchmarks/recall/zoology-fig2-cpu.yaml). A row counts as zoo would run it: each
(task, architecture, size) cell is resolved through the registry (presets and patterns
expanded, n_layers applied) and its layers' mixers are read off the resolved model."""

from pathlib import Path

import pytest

from zoo_core.compare import load_spec
from zoo_core.config import layer_mixers, load_config, resolve
from zoo_core.registry import get_registry

ROOT = Path(__file__).resolve().parents[1]
SPECS = ["benchmarks/scaling/cpu-tiny.yaml", "benchmarks/scaling/demo.yaml", "benchmarks/recall/zoology-fig2-cpu.yaml"]


def in_repo_distributions():
    import tomllib

    return {tomllib.loads(p.read_text())["project"]["name"] for p in (ROOT / "plugins").glob("*/pyproject.toml")}


def in_repo_mixers(registry):
    dists = in_repo_distributions()
    return {e.name for e in registry.entries("mixers") if e.distribution in dists}


def spec_mixers(path, registry):
    """{mixer name: [architecture rows whose resolved layers use it]}."""
    spec = load_spec(str(ROOT / path))
    found = {}
    for task, task_ov in spec.tasks.items():
        for arch, arch_ov in spec.architectures.items():
            for size in spec.task_sizes.get(task, list(spec.sizes)):
                cfg = resolve(load_config(None, spec.base + task_ov + arch_ov + spec.sizes[size]), registry)
                for m in layer_mixers(cfg.model):
                    found.setdefault(m["name"], set()).add(arch)
    return found


def test_the_in_repo_plugins_register_the_mixers_we_expect():
    """Guards the check below against an empty registry (a plugin that failed to load)."""
    mixers = in_repo_mixers(get_registry())
    assert {"attention", "mamba", "mamba2", "hawk", "mingru", "minlstm", "deltanet", "gated_deltanet"} <= mixers


@pytest.mark.parametrize("path", SPECS)
def test_every_in_repo_mixer_has_a_row(path):
    registry = get_registry()
    found = spec_mixers(path, registry)
    missing = sorted(in_repo_mixers(registry) - set(found))
    assert not missing, f"{path} has no row using {', '.join(missing)}: add one"


def test_the_gdn_hybrid_rows_hold_attention_layers():
    """At 3 layers the preset's own pattern (gated_deltanet x3, attention) would have no
    attention layer: the scaling specs give the row its own 3-layer pattern."""
    registry = get_registry()
    for path in SPECS[:2]:
        spec = load_spec(str(ROOT / path))
        for size, size_ov in spec.sizes.items():
            cfg = resolve(load_config(None, spec.base + spec.architectures["gdn-hybrid"] + size_ov), registry)
            names = [m["name"] for m in layer_mixers(cfg.model)]
            assert "attention" in names and "gated_deltanet" in names, (path, size, names)
