"""Keep freed CPU memory for reuse (glibc), as a caching allocator does on GPU.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a
fresh mmap and unmaps it on free, so each new tensor that size is page-faulted
in again: about 15 ms for a 33.5 MB (8, 4096, 256) fp32 tensor on a 2-core VM,
several times what a scan over it costs. Raising the thresholds makes glibc
serve such blocks from its heap and keep them once freed. The resident size
then stays at the run's high-water mark, as it does under PyTorch's CUDA
caching allocator. The Trainer applies this on CPU runs
(`train.keep_freed_memory`); the benchmarks apply it to every row alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_applied = False


def keep_freed_memory() -> str:
    """Apply the setting once per process; returns "" on success, else why not (one line)."""
    global _applied
    if _applied:
        return ""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return f"not glibc ({platform.system()} {platform.libc_ver()[0] or 'unknown libc'})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    except (OSError, AttributeError) as exc:
        return f"mallopt unavailable: {exc}"
    if not ok:
        return "mallopt refused the thresholds"
    _applied = True
    return ""
