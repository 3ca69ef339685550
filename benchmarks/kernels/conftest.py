"""Shared setup for the zoo-kernels microbenchmarks."""

import pytest
import torch


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
