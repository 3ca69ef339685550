import pytest
import torch


@pytest.fixture(autouse=True)
def _shared_cache_one_thread(tmp_path_factory, monkeypatch):
    # Shakespeare is prepared once per session, in the directory the core's tests use.
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path_factory.getbasetemp().parent / "zoo-cache"))
    # Tiny shapes: a second intra-op thread only waits for the first on a busy shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
