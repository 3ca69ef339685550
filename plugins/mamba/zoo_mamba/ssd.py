"""Mamba-2's chunked SSD in PyTorch now lives in zoo-kernels (zoo_kernels/ssd/chunk.py),
beside its Triton kernels; this name stays for existing imports."""

from zoo_kernels.ssd.chunk import ssd_chunked

__all__ = ["ssd_chunked"]
