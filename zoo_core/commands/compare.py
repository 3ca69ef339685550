"""zoo compare SPEC [--only a,b] [--out DIR]: architectures x sizes at equal compute."""


def run(args) -> None:
    from zoo_core.compare import load_spec, run_spec
    from zoo_core.registry import get_registry
    spec = load_spec(args.spec)
    if args.budget:
        from zoo_core.compare import parse_budget
        spec.budget_s = parse_budget(args.budget)
    only = [a for a in args.only.split(",") if a] if args.only else []
    unknown = [a for a in only if a not in spec.architectures]
    if unknown:
        from zoo_core.errors import UserError
        raise UserError(f"--only names {', '.join(unknown)}, not in the spec (architectures: {', '.join(spec.architectures)})")
    rows = run_spec(spec, get_registry(), args.out, only, progress=not args.quiet)
    out = args.out or spec.runs_dir
    print(open(f"{out}/results.md").read())
    print(f"wrote {out}/results.csv, results.md and plots")


def add_parser(sub) -> None:
    s = sub.add_parser("compare", help="train architectures x sizes at equal compute; table, plots, fits")
    s.add_argument("spec", help="a YAML spec (see benchmarks/scaling/cpu-tiny.yaml)")
    s.add_argument("--only", default="", help="comma-separated architectures from the spec")
    s.add_argument("--budget", default=None, help="override the spec's budget (e.g. 30s, 2m)")
    s.add_argument("--out", default=None, help="where results go (default: the spec's runs_dir)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=run)
