"""zoo-core: interfaces, plugin registry, config and the one training loop."""
import pluggy

__version__ = "0.1.0"

# Bumped only on a breaking change to the hook specs or the interfaces.
# A plugin declares the version it was built for as `zoo_api = N` in its module.
PLUGIN_API_VERSION = 1

hookimpl = pluggy.HookimplMarker("zoo")
hookspec = pluggy.HookspecMarker("zoo")

__all__ = ["__version__", "PLUGIN_API_VERSION", "hookimpl", "hookspec"]
