"""The C kernels ship as package data, and no Python module carries C in a string."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

from zoo_kernels import cbuild

PACKAGE = Path(cbuild.__file__).parent
C_FILES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*") if p.suffix in (".c", ".h"))


def test_every_c_file_is_a_resource_and_compiled():
    assert sorted(cbuild.SOURCES + cbuild.HEADERS) == C_FILES  # every .c is built, every .h hashed
    for name in C_FILES:
        text = resources.files("zoo_kernels").joinpath(name).read_text()
        assert text.strip(), name


def test_no_c_source_in_python_strings():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "#include" not in node.value and "#define" not in node.value, path


def test_wheel_ships_the_c_sources(tmp_path):
    """Build the wheel from a copy of kernels/ and look inside: every .c and .h is there."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE.parent, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    code = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in C_FILES if f"zoo_kernels/{n}" not in names]
    assert not missing, missing
