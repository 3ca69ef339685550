"""zoo export RUN [--out DIR] [--dtype float32|bfloat16]: consolidated safetensors plus config."""

DTYPES = ("float32", "bfloat16", "float16")


def run(args) -> None:
    import torch

    from zoo_core.checkpoint import export
    path = export(args.run, args.out, None if args.dtype == "float32" else getattr(torch, args.dtype))
    print(f"wrote {path} and {path.parent / 'config.yaml'}")


def add_parser(sub) -> None:
    s = sub.add_parser("export", help="write a run's latest checkpoint as one safetensors file plus its config")
    s.add_argument("run", help="a run directory (runs/<name>)")
    s.add_argument("--out", default=None, help="output directory (default: RUN/export)")
    s.add_argument("--dtype", default="float32", choices=DTYPES, help="floating-point dtype of the weights")
    s.set_defaults(fn=run)
