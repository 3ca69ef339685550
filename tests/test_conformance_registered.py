"""Every installed mixer, block, loss and data source passes the conformance kit.

Parametrized from the registry, so a new plugin is checked as soon as it is installed.
"""

import os

import pytest

from zoo_core.registry import get_registry
from zoo_core.testing import CHECKED_KINDS, check_registered

ITEMS = [(kind, name) for kind in CHECKED_KINDS for name in get_registry().names(kind)]


@pytest.mark.parametrize("kind, name", ITEMS, ids=[f"{k}-{n}" for k, n in ITEMS])
def test_registered_component_conforms(kind, name):
    # Data sources get longer windows: synthetic tasks (MQAR) need room for their pairs.
    kw = {"cache_dir": os.environ.get("ZOO_CACHE"), "seq_len": 64} if kind == "data" else {}
    report = check_registered(kind, name, **kw)
    if not any(r.status == "pass" for r in report.results):  # e.g. a data source that needs paths
        pytest.skip(report.results[0].reason)
    report.raise_for_failures()
