"""zoo export RUN [--format safetensors|hf] [--out DIR] [--dtype float32|bfloat16|float16]

safetensors (default): one consolidated file plus config.yaml, for zoo.
hf: a transformers directory (config.json, model.safetensors, tokenizer) that
`transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads with no remote code;
the mapping comes from the plugin that owns the mixer (docs/interop.md)."""

DTYPES = ("float32", "bfloat16", "float16", "float64")


def run(args) -> None:
    import torch

    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    if args.format == "hf":
        from zoo_core.interop import export_hf

        out, note = export_hf(args.run, args.out, dtype)
        print(f"wrote {out} (transformers: AutoModelForCausalLM.from_pretrained('{out}')); {note}")
        return
    from zoo_core.loop.runs import export

    path = export(args.run, args.out, dtype)
    print(f"wrote {path} and {path.parent / 'config.yaml'}")


def add_parser(sub) -> None:
    s = sub.add_parser(
        "export",
        help="write a run's latest checkpoint as safetensors plus config, or as a "
        "Hugging Face transformers directory (--format hf)",
    )
    s.add_argument("run", help="a run directory (runs/<name>)")
    s.add_argument(
        "--format",
        default="safetensors",
        choices=("safetensors", "hf"),
        help="safetensors: one file for zoo; hf: a transformers directory",
    )
    s.add_argument("--out", default=None, help="output directory (default: RUN/export, or RUN/hf for --format hf)")
    s.add_argument("--dtype", default="float32", choices=DTYPES, help="floating-point dtype of the weights")
    s.set_defaults(fn=run)
