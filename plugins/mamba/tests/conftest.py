import os

import pytest
import torch

# Triton kernels (zoo-kernels' SSD in test_ssd_triton_dispatch.py) run on CPU tensors through the
# interpreter when there is no GPU. TRITON_INTERPRET must be set before triton is imported, and
# importing zoo_mamba imports it (through torch): so here, before any test module is collected.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory, monkeypatch):
    # Shakespeare is prepared once per session, shared with the core's tests.
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path_factory.getbasetemp().parent / "zoo-cache"))
