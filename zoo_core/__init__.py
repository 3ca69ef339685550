"""zoo-core: interfaces, plugin registry, config and the one training loop.

The rooms (contracts here at the top, `loop/`, the default plugins and the
batteries) are drawn in docs/architecture.md; tests/test_layering.py keeps them apart.
"""

import pluggy

from zoo_core import _aliases

_aliases.install()  # old module paths (zoo_core.train, zoo_core.runs, ...) keep working

__version__ = "0.1.0"

# Bumped only on a breaking change to the hook specs or the interfaces.
# A plugin declares the version it was built for as `zoo_api = N` in its module.
PLUGIN_API_VERSION = 1

hookimpl = pluggy.HookimplMarker("zoo")
hookspec = pluggy.HookspecMarker("zoo")

__all__ = ["__version__", "PLUGIN_API_VERSION", "hookimpl", "hookspec"]
