"""zoo compare SPEC|NAME [--only a,b] [--budget B] [--out DIR]: architectures x sizes x budgets at equal compute."""


def run(args) -> None:
    from zoo_core.compare import load_spec, parse_budget_any, run_spec
    from zoo_core.registry import get_registry

    spec = load_spec(args.spec)
    if args.budget:
        spec.budgets = [parse_budget_any(b) for b in args.budget.split(",") if b.strip()]
    only = [a for a in args.only.split(",") if a] if args.only else []
    unknown = [a for a in only if a not in spec.architectures]
    if unknown:
        from zoo_core.errors import UserError

        raise UserError(
            f"--only names {', '.join(unknown)}, not in the spec (architectures: {', '.join(spec.architectures)})"
        )
    run_spec(spec, get_registry(), args.out, only, progress=not args.quiet, report_only=args.report_only)
    out = args.out or spec.runs_dir
    print(open(f"{out}/results.md").read())
    print(
        f"wrote {out}/results.csv (best lr per cell), sweep.csv (every lr), runs.csv (every run), results.md and plots"
    )


def add_parser(sub) -> None:
    s = sub.add_parser("compare", help="train architectures x sizes x budgets at equal compute; tables, plots, fits")
    s.add_argument("spec", help="a YAML spec, or the name of a shipped one (zoo list specs; docs/compare.md)")
    s.add_argument("--only", default="", help="comma-separated architectures from the spec")
    s.add_argument(
        "--budget",
        default=None,
        help="replace the spec's budgets: 30s, 2m, 2M tokens, 3e12 FLOPs (comma-separated for several)",
    )
    s.add_argument("--out", default=None, help="where results go (default: the spec's runs_dir)")
    s.add_argument(
        "--report-only",
        action="store_true",
        help="write the tables and plots from the runs already finished; train nothing",
    )
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=run)
