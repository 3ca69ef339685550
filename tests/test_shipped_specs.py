"""Shipped comparison specs are package data (issue #25): `zoo list specs` lists them and
`zoo compare NAME` runs one by name after `pip install`, not only in a checkout."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from zoo_core.cli import main
from zoo_core.compare import load_spec, shipped_specs, spec_summary

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["cpu-tiny", "demo", "zoology-fig2-cpu"]
#: The checkout's paths that docs and tests use, each a link to the one shipped file.
LINKS = {
    "benchmarks/scaling/cpu-tiny.yaml": "cpu-tiny",
    "benchmarks/scaling/demo.yaml": "demo",
    "benchmarks/recall/zoology-fig2-cpu.yaml": "zoology-fig2-cpu",
}


def test_specs_are_resources_with_a_one_line_description():
    specs = shipped_specs()
    assert list(specs) == SHIPPED
    for name in SHIPPED:
        text = resources.files("zoo_core.compare").joinpath("specs", f"{name}.yaml").read_text()
        assert specs[name].read_text() == text
        assert len(spec_summary(text)) > 20  # the first comment line, what `zoo list specs` prints
        spec = load_spec(name)
        assert spec.architectures and spec.budgets  # a whole spec, loaded by name


def test_the_checkout_paths_link_to_the_shipped_files_one_copy_only():
    package = ROOT / "zoo_core" / "compare" / "specs"
    for path, name in LINKS.items():
        link = ROOT / path
        assert link.is_symlink(), f"{path} should link to zoo_core/compare/specs/{name}.yaml, not copy it"
        assert link.resolve() == (package / f"{name}.yaml").resolve()
        assert load_spec(str(link)).name == load_spec(name).name


def test_list_specs_names_each_with_its_line(capsys):
    assert main(["list", "specs"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip() and not line.startswith("run")}
    assert list(rows) == SHIPPED
    for name in SHIPPED:
        assert spec_summary(shipped_specs()[name].read_text()) in rows[name]


def test_an_unknown_spec_name_is_one_line_with_the_shipped_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "cpu-tiyn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'cpu-tiny'" in err and "zoo list specs" in err


def test_wheel_ships_the_specs(tmp_path):
    """Build zoo-core's wheel from a copy of the package and look inside: every spec is there."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "zoo_core", src / "zoo_core", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    code = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in SHIPPED if f"zoo_core/compare/specs/{n}.yaml" not in names]
    assert not missing, missing


def test_compare_runs_a_shipped_spec_by_name_outside_a_checkout(tmp_path):
    """`zoo compare cpu-tiny` from a directory that is no checkout: one architecture, a budget of
    64 tokens (the spec's own budget is 45 s per run)."""
    cmd = [sys.executable, "-m", "zoo_core.cli", "compare", "cpu-tiny", "--only", "attention"]
    cmd += ["--budget", "64 tokens", "--out", str(tmp_path / "out"), "--quiet"]
    env = {**os.environ, "ZOO_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list(csv.DictReader((tmp_path / "out" / "runs.csv").open()))
    assert {row["arch"] for row in runs} == {"attention"} and len(runs) == len(load_spec("cpu-tiny").sizes)
    assert not (tmp_path / "benchmarks").exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_docs_name_each_spec_by_name(name):
    docs = (ROOT / "docs" / "compare.md").read_text() + (ROOT / "README.md").read_text()
    assert f"zoo compare {name}" in docs or name == "demo"
