"""The plugin registry: pluggy over the entry-point group `zoo`.

Plugins are modules named by `[project.entry-points.zoo]`. Each implements
hooks from `zoo_core.hookspecs`. The core's own defaults (`DEFAULT_PLUGINS`, one
module each) register through the same hooks, as pytest's built-in plugins do.

Two distributions registering the same name do not stop zoo: only a command
that resolves that name fails, with one line naming both and how to choose
(uninstall one, or set ZOO_PREFER=<distribution>[,<distribution>...]).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import json
import os
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pluggy

from zoo_core import PLUGIN_API_VERSION, __version__, hookspecs
from zoo_core.errors import RegistryError, UserError, did_you_mean

#: The one table of component kinds: kind -> (hook in zoo_core.hookspecs, what one item is called).
KIND_TABLE = {
    "mixers": ("register_mixers", "mixer"),
    "blocks": ("register_blocks", "block"),
    "losses": ("register_losses", "loss"),
    "data": ("register_data_sources", "data source"),
    "tokenizers": ("register_tokenizers", "tokenizer"),
    "presets": ("register_presets", "preset"),
    "exports": ("register_exports", "export"),
    "trackers": ("register_trackers", "tracker"),
    "commands": ("register_commands", "command"),
}
KINDS = {kind: hook for kind, (hook, _) in KIND_TABLE.items()}
SINGULAR = {kind: singular for kind, (_, singular) in KIND_TABLE.items()}
#: The core's own plugins, loaded by module name before any entry point, registered through
#: the same hooks as third-party plugins (pytest's `default_plugins`, llm's `default_plugins/`).
#: Each shows in `zoo plugins` as `zoo-core.<name>` (blocks, losses, data, ...); a third-party plugin can replace any
#: name they register (ZOO_PREFER picks between two claimants), and deleting a battery's folder
#: leaves the others working (its plugin is reported as not loaded).
DEFAULT_PLUGINS = (
    "zoo_core.defaults.blocks",
    "zoo_core.defaults.losses",
    "zoo_core.data.plugin",
    "zoo_core.tokenizers.plugin",
    "zoo_core.trackers.plugin",
    "zoo_core.commands.plugin",
)
ENTRY_POINT_GROUP = "zoo"
#: Distributions that win a name registered twice (comma-separated).
PREFER_ENV = "ZOO_PREFER"


class PluginWarning(UserWarning):
    """A plugin that could not be loaded; the others still work."""


@dataclasses.dataclass
class Entry:
    """One registered item."""

    kind: str
    name: str
    factory: Any
    config_cls: type | None
    description: str
    plugin: str
    distribution: str
    version: str


@dataclasses.dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    registered: dict[str, list[str]] = dataclasses.field(default_factory=dict)


class Registry:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("zoo")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.failed: dict[str, str] = {}
        self._items: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        #: Names registered by more than one distribution, with every claimant.
        self._conflicts: dict[str, dict[str, list[Entry]]] = {k: {} for k in KINDS}

    # -- loading ---------------------------------------------------------
    def add_plugin(self, module: Any, name: str, distribution: str, version: str) -> None:
        wanted = getattr(module, "zoo_api", PLUGIN_API_VERSION)
        if wanted != PLUGIN_API_VERSION:
            self._fail(
                name,
                distribution,
                f"built for zoo plugin API {wanted}, but zoo-core {__version__} "
                f"provides API {PLUGIN_API_VERSION}; upgrade the plugin or zoo-core",
            )
            return
        self.pm.register(module, name=name)
        self.plugins[name] = PluginInfo(name, distribution, version)

    def _fail(self, name: str, distribution: str, why: str) -> None:
        self.failed[name] = why
        warnings.warn(f"zoo plugin '{name}' ({distribution}) was not loaded: {why}", PluginWarning, stacklevel=3)

    def collect(self) -> None:
        """Ask every loaded plugin to register its items, one plugin at a time,
        so each item knows its provider and a broken hook only loses its plugin."""
        for kind, hook_name in KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():  # in registration order: the core first
                info = self.plugins[impl.plugin_name]
                try:
                    impl.function(register=self._registrar(kind, info))
                except Exception as exc:  # a plugin bug must not take the others down
                    self._fail(info.name, info.distribution, f"{type(exc).__name__}: {exc}")

    def _registrar(self, kind: str, info: PluginInfo) -> Callable[..., None]:
        def register(name: str, factory: Any, config_cls: type | None = None, description: str = "") -> None:
            entry = Entry(kind, name, factory, config_cls, description, info.name, info.distribution, info.version)
            info.registered.setdefault(kind, []).append(name)
            claimants = self._conflicts[kind].get(name) or (
                [self._items[kind][name]] if name in self._items[kind] else []
            )
            if not claimants:
                self._items[kind][name] = entry
                return
            claimants = claimants + [entry]
            preferred = [c for c in claimants if c.distribution in _preferred()]
            if len(preferred) == 1:  # the user chose: the name is theirs, no conflict
                self._items[kind][name] = preferred[0]
                self._conflicts[kind].pop(name, None)
            else:
                self._items[kind].pop(name, None)
                self._conflicts[kind][name] = claimants

        return register

    # -- queries ---------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def entries(self, kind: str) -> list[Entry]:
        return [self._items[kind][n] for n in self.names(kind)]

    def has(self, kind: str, name: str) -> bool:
        return name in self._items[kind] or name in self._conflicts[kind]

    def conflicts(self, kind: str) -> dict[str, list[Entry]]:
        return dict(self._conflicts[kind])

    def get(self, kind: str, name: str) -> Entry:
        if name in self._conflicts[kind]:
            raise RegistryError(self.conflict_message(kind, name))
        try:
            return self._items[kind][name]
        except KeyError:
            raise UserError(self.unknown_message(kind, name)) from None

    def conflict_message(self, kind: str, name: str) -> str:
        dists = [c.distribution for c in self._conflicts[kind][name]]
        return (
            f"{SINGULAR[kind]} '{name}' is registered by {len(dists)} distributions: {' and '.join(dists)}; "
            f"uninstall one (pip uninstall {dists[-1]}), or choose one with {PREFER_ENV}={dists[0]}"
        )

    def unknown_message(self, kind: str, name: str) -> str:
        installed = self.names(kind)
        msg = (
            f"unknown {SINGULAR[kind]} '{name}'{did_you_mean(name, installed)} "
            f"(installed {kind}: {', '.join(installed) or 'none'})"
        )
        plugin_dir = _catalog().get(name)
        if plugin_dir:
            msg += f"; '{name}' comes with zoo-{plugin_dir}: pip install ./plugins/{plugin_dir} (in a zoo checkout)"
        else:
            msg += "; install the plugin that provides it with pip (zoo plugins lists what is installed)"
        return msg


def _preferred() -> list[str]:
    return [d.strip() for d in os.environ.get(PREFER_ENV, "").split(",") if d.strip()]


@lru_cache(maxsize=1)
def _catalog() -> dict[str, str]:
    data = json.loads((Path(__file__).parent / "catalog.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _entry_points_to_load() -> list[md.EntryPoint]:
    eps = list(md.entry_points(group=ENTRY_POINT_GROUP))
    if os.environ.get("ZOO_DISABLE_PLUGIN_AUTOLOAD"):
        wanted = {p.strip() for p in os.environ.get("ZOO_PLUGINS", "").split(",") if p.strip()}
        eps = [ep for ep in eps if ep.name in wanted or (ep.dist and ep.dist.name in wanted)]
    return eps


def build_registry(default_plugins: Sequence[str] = DEFAULT_PLUGINS, entry_points: bool = True) -> Registry:
    """The core's default plugins (by module name), then every installed plugin's entry point."""
    reg = Registry()
    for module_name in default_plugins:
        parts = module_name.split(".")
        name = "zoo-core." + (parts[-2] if parts[-1] == "plugin" else parts[-1])
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a removed or broken battery: the rest still works
            reg._fail(name, "zoo-core", f"{type(exc).__name__}: {exc}")
            continue
        reg.add_plugin(module, name, "zoo-core", __version__)
    seen = set()
    for ep in _entry_points_to_load() if entry_points else []:
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if ep.name in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.name)
        try:
            module = ep.load()
        except Exception as exc:
            reg._fail(ep.name, dist, f"{type(exc).__name__}: {exc}")
            continue
        reg.add_plugin(module, ep.name, dist, version)
    reg.collect()
    return reg


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = build_registry()
    return _REGISTRY


# -- the names alone, without importing a plugin: `zoo plugins`, `zoo list` ----------------------
#
# Registering imports each plugin's module, and every mixer plugin imports torch at its top
# (seconds on a CPU machine). `zoo plugins` and `zoo list` only show names, so they read a cached
# catalog of what the last full build registered. The trade-off: the catalog is only as fresh as
# its key, so the key holds everything a registration can depend on that can be read without
# importing anything: zoo-core's version and plugin API, the default plugins, the entry points
# (name, module, distribution, version), every installed distribution (the names of the
# *.dist-info entries on sys.path: an optional dependency installed or removed), the selection
# and preference variables, and the size and mtime of every .py file of zoo_core and of each
# entry point's package (an editable plugin being edited). A plugin whose registration depends
# on anything else (the time of day, a file it reads) shows a stale list until the next change
# to one of those; a miss simply builds the registry (importing torch) and rewrites the catalog.
# A process that already built the registry answers from it, never from the catalog.

CATALOG_FORMAT = 1
_CATALOG_ENV = (PREFER_ENV, "ZOO_DISABLE_PLUGIN_AUTOLOAD", "ZOO_PLUGINS")


@dataclasses.dataclass
class CatalogEntry:
    """One registered name as the catalog keeps it: no factory, no config class."""

    kind: str
    name: str
    description: str
    plugin: str
    distribution: str
    version: str


@dataclasses.dataclass
class Catalog:
    """What a registry registered, by name only (`zoo plugins`, `zoo list`): JSON-serialisable."""

    plugins: dict[str, PluginInfo]
    failed: dict[str, str]
    items: dict[str, list[CatalogEntry]]

    @classmethod
    def of(cls, reg: Registry) -> Catalog:
        items = {
            kind: [
                CatalogEntry(e.kind, e.name, e.description, e.plugin, e.distribution, e.version)
                for e in reg.entries(kind)
            ]
            for kind in KINDS
        }
        return cls(dict(reg.plugins), dict(reg.failed), items)

    def entries(self, kind: str) -> list[CatalogEntry]:
        return list(self.items.get(kind, []))

    def to_json(self) -> dict[str, Any]:
        return {
            "plugins": [dataclasses.asdict(p) for p in self.plugins.values()],
            "failed": self.failed,
            "items": {k: [dataclasses.asdict(e) for e in v] for k, v in self.items.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        plugins = {p["name"]: PluginInfo(**p) for p in data["plugins"]}
        items = {k: [CatalogEntry(**e) for e in v] for k, v in data["items"].items()}
        return cls(plugins, dict(data["failed"]), items)


def _cache_root() -> Path:
    root = os.environ.get("ZOO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zoo"
    return Path(root)


def _source_stamp(package: str) -> list[Any]:
    """(file, size, mtime) of every .py file of a top-level package, found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return [package, None]
    if spec is None:
        return [package, None]
    roots = list(spec.submodule_search_locations or []) or ([spec.origin] if spec.origin else [])
    stamp: list[Any] = [package]
    for root in roots:
        path = Path(root)
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            stamp.append([str(f), st.st_size, st.st_mtime_ns])
    return stamp


def _installed() -> list[str]:
    """The *.dist-info / *.egg-info names on sys.path (their names carry the versions)."""
    import sys

    names: list[str] = []
    for entry in sys.path:
        try:
            names += [n for n in os.listdir(entry or ".") if n.endswith((".dist-info", ".egg-info", ".pth"))]
        except OSError:
            continue
    return sorted(names)


def catalog_key(default_plugins: Sequence[str] = DEFAULT_PLUGINS) -> str:
    """A hash of everything a registration may depend on that can be read without importing a plugin."""
    import hashlib

    eps = sorted(
        (ep.name, ep.value, ep.dist.name if ep.dist else "?", ep.dist.version if ep.dist else "?")
        for ep in _entry_points_to_load()
    )
    packages = sorted({"zoo_core", *(ep[1].split(":")[0].split(".")[0] for ep in eps)})
    data = [
        CATALOG_FORMAT,
        __version__,
        PLUGIN_API_VERSION,
        list(default_plugins),
        [os.environ.get(k, "") for k in _CATALOG_ENV],
        eps,
        _installed(),
        [_source_stamp(p) for p in packages],
    ]
    return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()


def catalog() -> Catalog:
    """What every installed plugin registers, by name, without importing the plugins when the
    cached catalog is current (see the comment above); otherwise the registry is built, which
    imports them (and torch), and the catalog is rewritten for the next call."""
    if _REGISTRY is not None:
        return Catalog.of(_REGISTRY)
    key = catalog_key()
    path = _cache_root() / "registry-catalog.json"
    try:
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            cat = Catalog.from_json(saved["catalog"])
            for name, why in cat.failed.items():  # as a fresh build warns
                dist = cat.plugins[name].distribution if name in cat.plugins else "?"
                warnings.warn(f"zoo plugin '{name}' ({dist}) was not loaded: {why}", PluginWarning, stacklevel=2)
            return cat
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no catalog yet, or an unreadable one: build
    cat = Catalog.of(get_registry())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "catalog": cat.to_json()}))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache: the next call builds again
    return cat
