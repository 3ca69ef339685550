"""zoo train [CONFIG|RUN_DIR] [key=value ...] [--nproc N]"""
import subprocess
import sys

from zoo_core.cli import split_config


def run(args) -> None:
    config, overrides = split_config(args.args)
    if args.nproc and args.nproc > 1:
        # The same loop under torchrun: one process per device on this machine.
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={args.nproc}",
               "-m", "zoo_core.train"] + ([config] if config else []) + overrides
        code = subprocess.call(cmd)
        if code:
            raise SystemExit(code)
        return
    from zoo_core.train import train
    train(config, overrides)


def add_parser(sub) -> None:
    s = sub.add_parser("train", help="train: zoo train [CONFIG|RUN_DIR] [key=value ...]")
    s.add_argument("--nproc", type=int, default=0, help="processes on this machine (launches torchrun)")
    s.add_argument("args", nargs="*", help="a YAML config or run directory, then key=value overrides")
    s.set_defaults(fn=run)
