"""The layering contract of zoo_core (docs/architecture.md draws the same table).

Read from the source with `ast`, so it needs no import of torch: every `import zoo_core...`
and `from zoo_core... import ...`, at module level or inside a function, is an arrow from the
importing module's room to the imported module's room. Only the arrows in ALLOWED may exist,
and no chain of zoo_core modules may import its own start (an import cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "zoo_core"

#: The contracts: small, read in one sitting, importing nothing but each other.
CONTRACTS = {
    "zoo_core",
    "zoo_core._aliases",
    "zoo_core.hookspecs",
    "zoo_core.interfaces",
    "zoo_core.registry",
    "zoo_core.config",
    "zoo_core.errors",
    "zoo_core.state",
}
#: Batteries: each can be deleted (with its line in registry.DEFAULT_PLUGINS) without breaking
#: another's imports. `cli` is the commands room's front door (the `zoo` entry point).
BATTERIES = (
    "data",
    "tokenizers",
    "eval",
    "compare",
    "throughput",
    "launch",
    "trackers",
    "demo",
    "interop",
    "testing",
    "commands",
)

#: room -> the rooms it may import (its own room always allowed), each exception with its reason.
ALLOWED: dict[str, dict[str, str]] = {
    "contracts": {},
    "loop": {"contracts": "the loop sees architectures only through the registry and the interfaces"},
    "defaults": {
        "contracts": "plugins implement the interfaces",
        "loop": "the default block and loss use the loop's layers (RMSNorm, SwiGLU) and CPU linear",
    },
    **{b: {"contracts": "", "loop": ""} for b in BATTERIES},
}
ALLOWED["tokenizers"]["data"] = "`zoo tokenizer train` reads text through the data battery's corpus readers"
ALLOWED["compare"]["throughput"] = "a time budget becomes steps from the measured tokens/s"
ALLOWED["demo"]["compare"] = "the demo is a tiny comparison"
ALLOWED["testing"]["tokenizers"] = "the data-source checks tokenize with the byte tokenizer"
ALLOWED["commands"].update(
    dict.fromkeys(
        ("defaults",) + BATTERIES, "the CLI is the front door: each command imports what it runs, inside its run()"
    )
)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _aliases() -> dict[str, str]:
    tree = ast.parse((ROOT / "_aliases.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "ALIASES":
            return ast.literal_eval(node.value)
    raise AssertionError("zoo_core/_aliases.py has no ALIASES table")


def room(module: str) -> str:
    if module in CONTRACTS:
        return "contracts"
    if module == "zoo_core.cli":
        return "commands"
    part = module.split(".")[1]
    if part in ("loop", "defaults") or part in BATTERIES:
        return part
    raise AssertionError(f"{module} is in no room: add it to a room in tests/test_layering.py and docs/architecture.md")


def _resolve(name: str) -> str:
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def imports(module: str) -> list[tuple[str, int, str]]:
    """(imported zoo_core module, line, the name as written) for every import in `module`."""
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "zoo_core"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "zoo_core"
        ):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.append((full if full in MODULES or full in _aliases() else node.module, node.lineno))
    return [(_resolve(name), line, name) for name, line in out]


def test_every_module_is_in_a_room():
    for module in MODULES:
        room(module)


def test_zoo_core_imports_its_modules_by_their_new_paths():
    old = _aliases()
    bad = [
        f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {name}; write {old[name]}"
        for m in MODULES
        for _, line, name in imports(m)
        if name in old
    ]
    assert not bad, "old module paths are for users and plugins only:\n" + "\n".join(bad)


def test_rooms_import_only_what_the_contract_allows():
    bad = []
    for module in sorted(MODULES):
        src = room(module)
        for target, line, _ in imports(module):
            dst = room(target)
            if dst != src and dst not in ALLOWED[src]:
                bad.append(
                    f"{MODULES[module].relative_to(ROOT.parent)}:{line}: {src} -> {dst} ({module} imports {target})"
                )
    assert not bad, (
        "imports across rooms that the layering contract does not allow "
        "(tests/test_layering.py ALLOWED, docs/architecture.md):\n" + "\n".join(bad)
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_no_import_cycle_among_zoo_core_modules():
    graph = {m: {t for t, _, _ in imports(m) if t != m} for m in MODULES}
    cycles = _cycles(graph)
    assert not cycles, "zoo_core modules that import each other (module or function level):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    "module",
    [
        "zoo_core.hookspecs",
        "zoo_core.registry",
        "zoo_core.config",
        "zoo_core.errors",
        "zoo_core.interfaces",
        "zoo_core.state",
    ],
)
def test_contracts_stay_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines < 450, f"{module} has {lines} lines: a contract should read in one sitting"
