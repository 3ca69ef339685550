"""The device's peak FLOP/s (for MFU) and the dtype the matmuls run in."""

from __future__ import annotations

from typing import Any

import torch

# Dense bf16 peak FLOP/s by device name (vendor datasheets); unknown devices get no MFU.
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
}


def device_peak(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> float | None:
    """Peak FLOP/s: CPU, the measured GEMM peak in `dtype`; CUDA, the datasheet's dense bf16 figure."""
    if device.type == "cpu":
        from zoo_core.loop.cpu.peak import gemm_peak

        return gemm_peak(dtype)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_FLOPS.items():
        if key in name:
            return peak
    return None


def compute_dtype(cfg: Any) -> torch.dtype:
    """The matmuls' dtype: bf16 under parallel.mixed_precision=bf16, else fp32 (the CPU peak to compare with)."""
    return torch.bfloat16 if cfg.parallel.mixed_precision == "bf16" else torch.float32
