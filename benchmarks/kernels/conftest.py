"""Shared setup for the zoo-kernels microbenchmarks.

ZOO_BENCH_THREADS=N sets torch's intra-op threads (default: torch's own choice).
ZOO_BENCH_MALLOC_REUSE=1 (glibc only) keeps freed memory for reuse: glibc hands
allocations above 32 MiB (a (8, 4096, 256) fp32 tensor is 33.5 MB) straight
back to the OS, so every new tensor that size is page-faulted in again, a cost
that can dominate a CPU scan and is not the kernel's.
"""

import ctypes
import os

import pytest
import torch

if os.environ.get("ZOO_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["ZOO_BENCH_THREADS"]))

if os.environ.get("ZOO_BENCH_MALLOC_REUSE") == "1":
    _libc = ctypes.CDLL("libc.so.6")
    _M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
    assert _libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1  # serve big blocks from the heap
    assert _libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1  # and keep them once freed


@pytest.fixture(scope="session")
def device_bandwidth_gbs():
    """Measured device-to-device copy bandwidth in GB/s (read + write), GPU only."""
    if not torch.cuda.is_available():
        return None
    src = torch.empty(2**28, dtype=torch.float32, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / 10
    return 2 * src.nbytes / seconds / 1e9
