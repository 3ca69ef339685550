"""Shared setup for the zoo-kernels microbenchmarks.

ZOO_BENCH_THREADS=N sets torch's intra-op threads (default: torch's own choice).
ZOO_BENCH_MALLOC_REUSE=1 (the default) keeps freed memory for reuse, as `zoo
train` does on CPU (zoo_core.cpu_memory): glibc hands allocations above 32 MiB
(a (8, 4096, 256) fp32 tensor is 33.5 MB) straight back to the OS, so every new
tensor that size is page-faulted in again, a cost that can dominate a CPU scan
and is not the kernel's. ZOO_BENCH_MALLOC_REUSE=0 measures glibc's defaults.
Either way the setting applies to every implementation alike.
"""

import os

import pytest
import torch

if os.environ.get("ZOO_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["ZOO_BENCH_THREADS"]))

if os.environ.get("ZOO_BENCH_MALLOC_REUSE", "1") == "1":
    from zoo_core.cpu_memory import keep_freed_memory

    _why_not = keep_freed_memory()
    if _why_not:
        print(f"benchmarks: freed memory is not kept ({_why_not})")


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


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the conditions that move CPU timings most: allocator setting, threads, load."""
    machine_info["zoo_freed_memory_kept"] = os.environ.get("ZOO_BENCH_MALLOC_REUSE", "1") == "1"
    machine_info["torch_threads"] = torch.get_num_threads()
    if hasattr(os, "getloadavg"):
        machine_info["load_average"] = list(os.getloadavg())
