"""zoo new-plugin NAME [--kind mixer|block|loss|data] [--out DIR]: scaffold a plugin package.

The package installs with `pip install -e DIR` and passes its own tests as
generated; the templates live in `zoo_core/templates/<kind>` and `common`.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from zoo_core.registry import KINDS as REGISTRY_HOOKS  # kind -> hook, singular label
from zoo_core.registry import SINGULAR

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# Per scaffold kind: the module holding the component, its class suffix and registry kind
# (the hook comes from the one kind table, zoo_core.registry.KIND_TABLE).
KINDS = {
    "mixer": ("mixer", "Mixer", "mixers"),
    "block": ("block", "Block", "blocks"),
    "loss": ("loss", "Head", "losses"),
    "data": ("source", "Source", "data"),
}
# What the generated component computes, and how to train with it (${name}: the plugin's name).
SUMMARY = {
    "mixer": "a causal exponential moving average with a learned per-channel decay",
    "block": "a parallel residual block: x + mixer(norm(x)) + mlp(norm(x))",
    "loss": "next-token cross-entropy with a z-loss on the log-partition",
    "data": "a synthetic copy task: random symbols, then the same symbols again",
}
USAGE = {
    "mixer": "    zoo train model.mixer.name=${name} model.mixer.expand=2\n"
    "    zoo train model.pattern='[${name}, attention]'    # in a hybrid",
    "block": "    zoo train model.block.name=${name} model.mixer.name=attention",
    "loss": "    zoo train model.loss.name=${name} model.loss.z_loss=1e-4",
    "data": "    zoo train data.source.name=${name} data.source.n_symbols=16",
}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def placeholders(name: str, kind: str) -> dict[str, str]:
    from zoo_core import PLUGIN_API_VERSION, __version__

    module, suffix, registry_kind = KINDS[kind]
    values = dict(
        name=name,
        package=f"zoo_{name}",
        dist=f"zoo-{name.replace('_', '-')}",
        Class=camel(name),
        kind=kind,
        kind_label=SINGULAR[registry_kind],
        module=module,
        cls=camel(name) + suffix,
        hook=REGISTRY_HOOKS[registry_kind],
        summary=SUMMARY[kind],
        zoo_api=str(PLUGIN_API_VERSION),
        core_version=".".join(__version__.split(".")[:2]),
    )
    values["usage"] = string.Template(USAGE[kind]).substitute(values)
    return values


def check_name(name: str, kind: str) -> None:
    from zoo_core.errors import UserError

    if not NAME_RE.match(name):
        fixed = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_") or "my_mixer"
        raise UserError(
            f"plugin name '{name}' must be lowercase letters, digits and _, starting with a "
            f"letter (it becomes the package zoo_<name>); try '{fixed}'"
        )
    from zoo_core.registry import get_registry

    reg = get_registry()
    _, _, registry_kind = KINDS[kind]
    if reg.has(registry_kind, name):
        owner = reg.get(registry_kind, name).distribution
        raise UserError(
            f"a {kind} named '{name}' is already registered by {owner}; "
            f"pick another name (two plugins may not register the same name)"
        )


def render(name: str, kind: str, out: Path, force: bool = False) -> list[Path]:
    """Write the package; returns the files written."""
    from zoo_core.errors import UserError

    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"'{out}' exists and is not empty; choose another --out or pass --force")
    values = placeholders(name, kind)
    written = []
    for root in (TEMPLATES / "common", TEMPLATES / kind):
        for src in sorted(root.rglob("*.tmpl")):
            rel = str(src.relative_to(root))[: -len(".tmpl")]
            rel = rel.replace("__package__", values["package"]).replace("__name__", name)
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(string.Template(src.read_text()).substitute(values))
            written.append(dest)
    return written


def run(args) -> None:
    from zoo_core.errors import UserError

    if args.kind not in KINDS:  # argparse choices would print usage; keep the one-line style
        raise UserError(f"--kind {args.kind} is not one of {', '.join(KINDS)}")
    check_name(args.name, args.kind)
    out = Path(args.out) if args.out else Path(f"zoo-{args.name.replace('_', '-')}")
    files = render(args.name, args.kind, out, args.force)
    print(f"created {placeholders(args.name, args.kind)['dist']} ({args.kind}) in {out}/ with {len(files)} files:")
    for f in files:
        print(f"  {f.relative_to(out)}")
    print(f"next: pip install -e {out} && (cd {out} && pytest) && zoo check {args.name}")


def add_parser(sub) -> None:
    s = sub.add_parser("new-plugin", help="scaffold a plugin package (mixer, block, loss or data source)")
    s.add_argument("name", help="lowercase name, e.g. my_mixer: registered as it, package zoo_<name>")
    s.add_argument("--kind", default="mixer", help="mixer | block | loss | data (default mixer)")
    s.add_argument("--out", default=None, help="directory to create (default ./zoo-<name>)")
    s.add_argument("--force", action="store_true", help="write into a non-empty directory")
    s.set_defaults(fn=run)
