"""pytest plugin (entry point `pytest11: zoo`): the conformance kit as fixtures.

    def test_my_mixer_conforms(zoo_conformance):
        zoo_conformance.mixer(MyMixer, MyConfig())

Also usable without the entry point: `pytest_plugins = ["zoo_core.testing.pytest_plugin"]`
in a top-level conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


class Conformance:
    """Each method runs one component's checks and fails the test, listing every
    failed check with its reason; it returns the `Report` when all pass."""

    def __init__(self, **defaults: Any) -> None:
        self.defaults = defaults

    def _assert(self, report):
        return report.raise_for_failures()

    def mixer(self, factory: Callable, config: Any = None, **kw: Any):
        from zoo_core.testing import check_mixer

        return self._assert(check_mixer(factory, config, **{**self.defaults, **kw}))

    def block(self, factory: Callable, config: Any = None, **kw: Any):
        from zoo_core.testing import check_block

        return self._assert(check_block(factory, config, **{**self.defaults, **kw}))

    def loss(self, factory: Callable, config: Any = None, **kw: Any):
        from zoo_core.testing import check_loss

        return self._assert(check_loss(factory, config, **{**self.defaults, **kw}))

    def data(self, factory: Callable, config: Any = None, **kw: Any):
        from zoo_core.testing import check_data_source

        return self._assert(check_data_source(factory, config, **kw))

    def registered(self, kind: str, name: str, options: dict | None = None, **kw: Any):
        """An installed item by registry kind (mixers, blocks, losses, data) and name."""
        from zoo_core.testing import check_registered

        extra = {} if kind == "data" else self.defaults
        return self._assert(check_registered(kind, name, options, **{**extra, **kw}))


@pytest.fixture
def zoo_conformance() -> Conformance:
    """The conformance kit; `zoo_conformance.mixer(MyMixer, MyConfig())` and friends."""
    return Conformance()


@pytest.fixture(scope="session")
def zoo_registry():
    """The registry of installed plugins, as `zoo train` sees it."""
    from zoo_core.registry import get_registry

    return get_registry()


def pytest_report_header(config):
    from zoo_core import PLUGIN_API_VERSION, __version__

    return f"zoo-core {__version__}, plugin API {PLUGIN_API_VERSION}"
