"""zoo check [NAME] [key=value ...]: run the conformance kit on installed plugins.

NAME is a mixer/block/loss/data name, a plugin (entry-point) name or a
distribution; without it, everything installed is checked. Exit status:
0 all passed, 1 some check failed or no check ran at all (every one skipped,
with the reasons), 2 unknown name or bad options.
"""


class ChecksFailed(Exception):
    exit_code = 1


def run(args) -> None:
    from omegaconf import OmegaConf

    from zoo_core.cli import split_config
    from zoo_core.config import parse_overrides
    from zoo_core.errors import UserError, did_you_mean
    from zoo_core.testing import Report, check_names, check_registered, check_target

    items = ([args.name] if args.name else []) + list(args.options)
    name, overrides = split_config(items)
    targets = check_target(name)
    options = OmegaConf.to_container(parse_overrides(overrides)) if overrides else None
    if options and len(targets) != 1:
        raise UserError(
            f"options ({', '.join(overrides)}) need a single mixer/block/loss/data name, "
            f"but '{name}' covers {len(targets)}: name one of {', '.join(n for _, n in targets)}"
        )
    report = Report()
    skip = [s.strip() for s in args.skip.split(",") if s.strip()] if args.skip else []
    for s in skip:
        if s not in check_names():
            raise UserError(
                f"--skip {s}: no such check{did_you_mean(s, check_names())} (checks: {', '.join(check_names())})"
            )
    for kind, item in targets:
        kw = dict(seq_len=args.seq_len, skip=skip)
        if kind != "data":
            kw.update(dim=args.dim, batch=args.batch)
        part = check_registered(kind, item, options, **kw)
        report.extend(part)
        if not args.quiet:
            print(part.table(), end="\n\n", flush=True)
    print(report.summary())
    ran = [r for r in report.results if r.status != "skip"]
    if not ran:
        reasons = sorted({r.reason for r in report.results if r.reason}) or ["nothing to check"]
        raise ChecksFailed(
            f"no check ran ({len(report.results)} skipped): {'; '.join(reasons)[:300]}; "
            f"pass the options the component needs, or drop --skip"
        )
    if not report.ok:
        raise ChecksFailed(
            f"{len(report.failures)} conformance check(s) failed: "
            + "; ".join(f"{r.component}: {r.check}" for r in report.failures)
        )


def add_parser(sub) -> None:
    s = sub.add_parser("check", help="run the conformance kit on an installed plugin, mixer, block or loss")
    s.add_argument(
        "name",
        nargs="?",
        default=None,
        help="a mixer/block/loss/data name, plugin or distribution (default: everything installed)",
    )
    s.add_argument("options", nargs="*", help="key=value options for a single named component")
    s.add_argument("--dim", type=int, default=32)
    s.add_argument("--seq-len", type=int, default=16)
    s.add_argument("--batch", type=int, default=2)
    s.add_argument("--skip", default="", help="comma-separated check names to skip, e.g. fsdp")
    s.add_argument("--quiet", action="store_true", help="print only the summary")
    s.set_defaults(fn=run)
