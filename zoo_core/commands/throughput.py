"""zoo throughput [CONFIG] [key=value ...] [--sweep] [--csv PATH]"""

from zoo_core.cli import split_config, table


def run(args) -> None:
    from zoo_core.config import resolve
    from zoo_core.loop.train import run_config
    from zoo_core.registry import get_registry
    from zoo_core.throughput import append_csv, measure, sweep

    config, overrides = split_config(args.args)
    registry = get_registry()
    cfg = resolve(run_config(config, overrides), registry)
    from zoo_core.loop.validate import check_buildable

    check_buildable(cfg, registry)  # a model that cannot be built or held: one line, nothing allocated
    micro = args.micro_batch or cfg.train.micro_batch or cfg.train.global_batch
    kw = {"warmup": args.warmup, "repeats": args.repeats}
    results = sweep(cfg, registry, **kw) if args.sweep else [measure(cfg, registry, micro, **kw)]
    rows = [r.row(cfg) for r in results]
    print(
        table(
            [
                [
                    r["mixers"],
                    r["micro_batch"],
                    r["seq_len"],
                    f"{r['params']:,}",
                    f"{r['tokens_per_s']:,.0f}",
                    f"{r['flops_per_token']:.3g}",
                    "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
                    f"{r['peak_mem_mb']:.0f}",
                ]
                for r in rows
            ],
            ["mixers", "micro_batch", "seq_len", "params", "tokens/s", "train FLOPs/token", "MFU", "peak MB"],
        )
    )
    if args.sweep:
        print(f"largest micro-batch that fits: {rows[-1]['micro_batch']}")
    if args.csv:
        append_csv(args.csv, rows)
        print(f"wrote {args.csv}")


def add_parser(sub) -> None:
    s = sub.add_parser("throughput", help="training tokens/s, FLOPs/token and MFU on this hardware")
    s.add_argument("args", nargs="*", help="a YAML config, then key=value overrides")
    s.add_argument(
        "--micro-batch", type=int, default=0, help="sequences per step (default: train.micro_batch or global_batch)"
    )
    s.add_argument("--sweep", action="store_true", help="double the micro-batch until it no longer fits")
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--repeats", type=int, default=10)
    s.add_argument("--csv", default=None, help="append results to this CSV")
    s.set_defaults(fn=run)
