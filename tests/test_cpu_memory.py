"""keep_freed_memory: applied once on glibc, a one-line reason elsewhere, and a config switch."""

import platform
import subprocess
import sys

import pytest

from zoo_core.config import RunConfig

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_default_is_on_and_documented():
    assert RunConfig().train.keep_freed_memory is True
    from pathlib import Path

    assert "keep_freed_memory" in (Path(__file__).parents[1] / "docs" / "config.md").read_text()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_big_blocks_come_from_the_heap_after_it_is_applied():
    """A 40 MB block is mmapped by default and served from the heap (brk) once applied."""
    code = (
        "import ctypes, ctypes.util\n"
        "from zoo_core.cpu_memory import keep_freed_memory\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.sbrk.restype = ctypes.c_void_p\n"
        "def from_heap():\n"
        "    p = libc.malloc(40 << 20); top = libc.sbrk(0); libc.free(ctypes.c_void_p(p))\n"
        "    return p < top\n"
        "before = from_heap()\n"
        "assert keep_freed_memory() == '' and keep_freed_memory() == ''\n"
        "print(before, from_heap())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_elsewhere_it_says_why_in_one_line(monkeypatch):
    from zoo_core import cpu_memory

    monkeypatch.setattr(cpu_memory, "_applied", False)
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    why = cpu_memory.keep_freed_memory()
    assert why.startswith("not glibc") and "\n" not in why
