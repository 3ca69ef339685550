import pytest

from zoo_attention import cpu_route
from zoo_core import cpu_tune


@pytest.fixture(autouse=True)
def _private_cpu_tune(tmp_path, monkeypatch):
    # backend=auto on CPU may time SDPA against matmul and cache the answer: in a file of the
    # test's own, never the user's cache.
    monkeypatch.setenv("ZOO_CPU_TUNE", str(tmp_path / "cpu-tune.json"))
    cpu_tune.forget()
    cpu_route.forget()
    yield
    cpu_tune.forget()
    cpu_route.forget()
