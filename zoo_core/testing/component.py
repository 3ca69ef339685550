"""What one suite of checks checks (built by `zoo_core.testing.check_*`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class Component:
    """The report's label, the factory, its config and the config's class (for the YAML round-trip)."""

    label: str
    factory: Callable
    config: Any
    config_cls: type | None
