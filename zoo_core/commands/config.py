"""zoo config [CONFIG|RUN_DIR] [key=value ...] [--options [PREFIX]]: the resolved config, or every key

Without --options: the config `zoo train` would run with the same arguments, resolved and
validated the same way, as YAML, then the parameter count, the decoding state and the
forward FLOPs per token as YAML comments (the output stays valid YAML). Writes nothing
but a cache entry.
With --options: every key with its type, default, allowed values and one-line doc,
including the options of the mixer, block, loss, data source and tokenizer the overrides choose.

Filling in plugin options and counting parameters needs the plugins, so torch. The first
`zoo config` for given arguments imports them; its output is cached under $ZOO_CACHE/config/,
keyed by the registry catalog's key (every plugin's version, entry points and source stamps),
the arguments, the working directory and the size and mtime of every file the merged config
names, so that asking again (the usual loop: edit, `zoo config`, edit) answers without torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zoo_core.cli import split_config


def precheck(config: str | None, overrides: list[str]) -> Any:
    """Keys, types, choices and ranges, checked before anything imports torch or a plugin, so
    that a typo answers at once (the same one line as later: zoo_core.config.merge says it).
    Names of plugins (an unknown mixer) and plugin options need the registry, so torch."""
    from zoo_core.config import load_config

    path = Path(config) if config else None
    if path is not None and path.is_dir():
        path = path / "config.yaml"
        if not path.is_file():
            return None  # run_config says what is wrong with the directory
    return load_config(str(path) if path else None, overrides)


def cache_file(merged: Any, items: list[str], prefix: str | None) -> Path | None:
    """Where the output for these arguments is kept (see the module docstring); None when the
    cache cannot be keyed (a directory argument without its config.yaml)."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    from zoo_core.registry import _cache_root, catalog_key

    if merged is None:
        return None
    stamps = []
    strings = [v for v in _leaves(OmegaConf.to_container(merged, resolve=False)) if isinstance(v, str)]
    for name in sorted(set(items + strings)):
        path = Path(name.split("=", 1)[-1])
        try:
            st = (path / "config.yaml" if path.is_dir() else path).stat()
        except (OSError, ValueError):
            continue
        stamps.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    data = [catalog_key(), items, prefix, os.getcwd(), stamps]
    key = hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()
    return _cache_root() / "config" / f"{key}.txt"


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in [k, *_leaves(v)]]
    if isinstance(tree, list):
        return [leaf for v in tree for leaf in _leaves(v)]
    return [tree]


def resolved(config: str | None, overrides: list[str]) -> tuple[Any, Any]:
    """(resolved config, registry), validated as `zoo train` validates it on one process."""
    precheck(config, overrides)
    from zoo_core.config import resolve
    from zoo_core.loop.train import run_config
    from zoo_core.loop.validate import check_buildable
    from zoo_core.registry import get_registry

    registry = get_registry()
    cfg = resolve(run_config(config, overrides), registry)
    check_buildable(cfg, registry)  # a model that cannot be built: the same one line as zoo train
    return cfg, registry


def summary(cfg: Any, registry: Any) -> list[str]:
    """The YAML comments after the config: params, decoding state and FLOPs, from the one meta build."""
    from zoo_core.loop.components import build_tokenizer, model_vocab
    from zoo_core.loop.model import meta_model

    vocab = model_vocab(cfg, registry, build_tokenizer(cfg, registry))
    model = meta_model(cfg.model, registry, vocab)
    seq_len = cfg.data.seq_len
    return [
        f"# params: {model.num_params():,} (non-embedding {model.num_params(False):,})",
        f"# decoding state: {model.state_size(seq_len):,} bytes per sequence (after {seq_len} tokens)",
        f"# FLOPs per token: {model.flops_per_token(seq_len):.4g} (forward, at seq_len {seq_len})",
    ]


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's one-line doc: the `#:` comment lines just above it, joined
    (a field's `metadata={"doc": ...}` wins). Fields without either are left out; so is
    everything when the class's source cannot be read."""
    import dataclasses
    import inspect
    import re
    import textwrap

    docs: dict[str, str] = {}
    try:
        lines = textwrap.dedent(inspect.getsource(cls)).splitlines()
    except (OSError, TypeError):
        lines = []
    pending: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"^\s{1,8}(\w+)\s*:", line)
        if match and pending:
            docs[match.group(1)] = " ".join(pending)
        if stripped and not stripped.startswith("#"):
            pending = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("doc"):
            docs[f.name] = str(f.metadata["doc"])
    return docs


def type_name(annotation: Any) -> str:
    """A field's type as written (`int | None`), whether or not annotations are strings."""
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def field_default(f: Any) -> Any:
    """A field's default value (a default_factory is called); MISSING when it has none."""
    import dataclasses

    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def allowed_text(key: str) -> str:
    """A key's allowed values as `zoo config --options` prints them: its range or its choices."""
    from zoo_core.config import CHOICES, RANGES, _range_text

    if key in RANGES:
        return _range_text(key)
    section, _, name = key.partition(".")
    if (section, name) in CHOICES:
        return " | ".join(CHOICES[(section, name)])
    return ""


def _value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def config_rows(component: Any = None) -> list[list[str]]:
    """[key, type, default, allowed, doc] for every key of RunConfig, from the dataclasses alone
    (their `#:` comments, RANGES and CHOICES). A component section (`model.mixer`, ...) is one
    `KEY.name` row; `component(key, kind, default, doc)` may return rows to put there instead."""
    import dataclasses

    from zoo_core.config import COMPONENTS, RANGES, RunConfig

    rows: list[list[str]] = []

    def walk(cls: type, prefix: str) -> None:
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            default = field_default(f)
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{key}.")
                continue
            if isinstance(default, dict) and (prefix.rstrip("."), f.name) in COMPONENTS:
                kind = COMPONENTS[(prefix.rstrip("."), f.name)]
                doc = docs.get(f.name) or f"the {kind} plugin (zoo list {kind})"
                own = component(key, kind, default, doc) if component else None
                rows.extend(own or [[f"{key}.name", "str", _value(default.get("name")), f"zoo list {kind}", doc]])
                continue
            doc = docs.get(f.name) or (RANGES[key][2] if key in RANGES else "")
            rows.append([key, type_name(f.type), _value(default), allowed_text(key), doc])

    walk(RunConfig, "")
    return rows


def option_rows(cfg: Any, registry: Any) -> list[list[str]]:
    """[key, type, default, allowed, doc] for every key of RunConfig and of the chosen components."""
    import dataclasses

    from omegaconf import OmegaConf

    def component(kind: str, name: str | None, prefix: str) -> list[list[str]]:
        cls = registry.get(kind, name).config_cls if name else None
        if cls is None:
            return []
        docs = field_docs(cls)
        rows = []
        for f in dataclasses.fields(cls):
            default = field_default(f)
            shown = "(required)" if default is dataclasses.MISSING else _value(default)
            rows.append([f"{prefix}{f.name}", type_name(f.type), shown, "", f"{name}: {docs.get(f.name, '')}".rstrip()])
        return rows

    def section(key: str, kind: str, default: dict, doc: str) -> list[list[str]]:
        chosen = OmegaConf.select(cfg, key)
        name = chosen.get("name") if chosen is not None else default.get("name")
        head = [f"{key}.name", "str", _value(default.get("name")), ", ".join(registry.names(kind)), doc]
        return [head, *component(kind, name, f"{key}.")]

    rows = config_rows(section)
    if cfg.model.pattern:
        seen = {cfg.model.mixer.name}
        for entry in cfg.model.pattern:
            if entry["name"] not in seen:
                seen.add(entry["name"])
                rows += component("mixers", entry["name"], f"model.pattern[name={entry['name']}].")
    return rows


# -- docs/config.md: its key tables are generated from the same dataclasses ------------------------

#: The file whose marked tables `python -m zoo_core.commands.config --markdown` rewrites.
DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"
REGENERATE = "python -m zoo_core.commands.config --markdown docs/config.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_tables() -> dict[str, str]:
    """Each generated table of docs/config.md by marker name: `ranges` (every numeric range),
    `components` (the `{name: ...}` sections) and one per section (`model`, `data`, ..., `top`)."""
    from zoo_core.config import COMPONENTS, RANGES

    def md(header: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)

    ranges = [[f"`{k}`", allowed_text(k), RANGES[k][2]] for k in RANGES]
    tables = {"ranges": md(["key", "allowed", "what it is"], ranges)}
    comps = []
    for row in config_rows():
        section, _, name = row[0].partition(".")
        if (section, name.removesuffix(".name")) in COMPONENTS:
            kind = COMPONENTS[(section, name.removesuffix(".name"))]
            comps.append([f"`{row[0].removesuffix('.name')}`", kind, f"`{{name: {row[2]}}}`", f"`zoo list {kind}`"])
    tables["components"] = md(["key", "registry kind", "default", "list them"], comps)
    sections: dict[str, list[list[str]]] = {}
    for key, typ, default, allowed, doc in config_rows():
        section, dot, _ = key.partition(".")
        name = section if dot else "top"
        sections.setdefault(name, []).append([f"`{key}`", f"`{typ}`", f"`{default}`", allowed, doc])
    for name, rows in sections.items():
        tables[name] = md(["key", "type", "default", "allowed", "doc"], rows)
    return tables


def render_docs(text: str) -> str:
    """`text` (docs/config.md) with every `<!-- generated: NAME -->` ... `<!-- end: NAME -->` block
    replaced by the current table; the hand-written prose around them is kept as it is."""
    import re

    from zoo_core.errors import UserError

    tables = markdown_tables()

    def fill(match: Any) -> str:
        name = match.group(1)
        if name not in tables:
            raise UserError(f"docs/config.md marks an unknown table '{name}' (tables: {', '.join(tables)})")
        return f"{match.group(0).split(chr(10))[0]}\n{tables[name]}\n<!-- end: {name} -->"

    pattern = r"<!-- generated: (\w+)[^\n]*-->\n.*?<!-- end: \1 -->"
    return re.sub(pattern, fill, text, flags=re.S)


def run(args) -> None:
    from omegaconf import OmegaConf

    from zoo_core.cli import table
    from zoo_core.errors import UserError

    items = list(args.args)
    prefix = args.options
    if prefix and ("=" in prefix or Path(prefix).exists()):
        # `--options model.mixer.name=hawk` or `--options my.yaml`: an argument, not a prefix
        items.insert(0, prefix)
        prefix = ""
    config, overrides = split_config(items)
    cached = cache_file(precheck(config, overrides), items, prefix)
    if cached is not None and cached.is_file():
        print(cached.read_text(), end="")
        return
    cfg, registry = resolved(config, overrides)
    if prefix is None:
        if cfg.model.vocab_size is None:  # what the run will use, as its config.yaml will say
            from zoo_core.loop.components import build_tokenizer, model_vocab

            cfg.model.vocab_size = model_vocab(cfg, registry, build_tokenizer(cfg, registry))
        out = OmegaConf.to_yaml(cfg) + "\n".join(summary(cfg, registry)) + "\n"
    else:
        rows = [r for r in option_rows(cfg, registry) if r[0].startswith(prefix)]
        if not rows:
            raise UserError(f"no config key starts with '{prefix}'; zoo config --options lists every key")
        out = table(rows, ["key", "type", "default", "allowed", "doc"]) + "\n"
    print(out, end="")
    if cached is not None:
        try:  # written whole, then renamed: a reader never sees half of it
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            tmp.write_text(out)
            tmp.replace(cached)
        except OSError:
            pass  # a read-only cache: the next call resolves again


def add_parser(sub) -> None:
    s = sub.add_parser("config", help="the resolved config (YAML, params, state, FLOPs), or every key: --options")
    s.add_argument("args", nargs="*", help="a YAML config or run directory, then key=value overrides")
    s.add_argument(
        "--options",
        nargs="?",
        const="",
        default=None,
        metavar="PREFIX",
        help="list every key (or those starting with PREFIX) with type, default, allowed values and doc",
    )
    s.set_defaults(fn=run)


if __name__ == "__main__":  # python -m zoo_core.commands.config --markdown docs/config.md
    import argparse

    parser = argparse.ArgumentParser(description="rewrite the generated key tables of docs/config.md")
    parser.add_argument("--markdown", metavar="FILE", default=str(DOCS), help="the file to rewrite in place")
    path = Path(parser.parse_args().markdown)
    path.write_text(render_docs(path.read_text()))
    print(f"wrote the key tables of {path}")
