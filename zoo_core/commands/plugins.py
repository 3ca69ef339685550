"""zoo plugins: installed plugins and what each registers.

Names only, so it reads `zoo_core.registry.catalog()`: the cached catalog of the last build,
without importing a plugin (or torch) while nothing it depends on has changed."""

from zoo_core.cli import table


def run(args) -> None:
    from zoo_core.registry import catalog

    reg = catalog()
    rows = []
    for info in reg.plugins.values():
        what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.registered.items())
        rows.append([info.name, info.distribution, info.version, what or "-"])
    for name, why in reg.failed.items():
        rows.append([name, "?", "?", f"NOT LOADED: {why}"])
    print(table(rows, ["plugin", "distribution", "version", "registers"]))


def add_parser(sub) -> None:
    sub.add_parser("plugins", help="installed plugins and what they register").set_defaults(fn=run)
