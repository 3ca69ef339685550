"""The public API that kernels/README.md lists is what `zoo_kernels` exports."""

from __future__ import annotations

import re
from pathlib import Path

import zoo_kernels

README = Path(__file__).resolve().parents[1] / "README.md"


def _listed() -> set[str]:
    """The names after "public API:" in the README's layout block (to the next file entry)."""
    text = README.read_text()
    block = re.search(r"public API:(.*?)\n  \S", text, re.S)
    assert block, "kernels/README.md lost its 'public API:' line"
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", block.group(1)))


def test_readme_lists_exactly_the_exports():
    assert _listed() == set(zoo_kernels.__all__)
    for name in zoo_kernels.__all__:
        assert callable(getattr(zoo_kernels, name)), name
