"""zoo import DIR [key=value ...] [--name RUN] [--runs-dir runs]: a Hugging Face transformers
directory (LlamaForCausalLM, MambaForCausalLM, Mamba2ForCausalLM, RecurrentGemmaForCausalLM, or
any family a plugin maps) becomes a zoo run that zoo eval, zoo generate and zoo train accept."""


def run(args) -> None:
    from zoo_core.interop import import_hf

    run_dir = import_hf(args.dir, args.name, args.runs_dir, args.overrides)
    print(f"imported {args.dir} as {run_dir} (zoo eval {run_dir}; zoo generate {run_dir}; zoo train {run_dir})")


def add_parser(sub) -> None:
    s = sub.add_parser("import", help="turn a Hugging Face transformers directory into a zoo run")
    s.add_argument("dir", help="a directory written by save_pretrained (config.json, *.safetensors)")
    s.add_argument("--name", default=None, help="run name (default: the directory's name)")
    s.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    s.add_argument("overrides", nargs="*", help="key=value config overrides for the new run (data.*, train.*)")
    s.set_defaults(fn=run)
