import os
import sys

import pytest
import torch

# The Triton kernel runs on CPU tensors through the interpreter; it must be set before
# triton is imported (zoo_deltanet imports it only when the kernel first runs).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# pytest runs with --import-mode=importlib here: make the shared helpers importable
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _shared_cache_one_thread(tmp_path_factory, monkeypatch):
    # Shakespeare is prepared once per session, in the directory the core's tests use.
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path_factory.getbasetemp().parent / "zoo-cache"))
    # Tiny shapes: a second intra-op thread only waits on a busy shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
