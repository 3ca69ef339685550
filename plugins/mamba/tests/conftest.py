import os

import pytest


@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory, monkeypatch):
    # Shakespeare is prepared once per session, shared with the core's tests.
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path_factory.getbasetemp().parent / "zoo-cache"))
