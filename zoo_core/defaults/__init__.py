"""The core's default block and loss: default plugins (zoo_core.registry.DEFAULT_PLUGINS)."""
