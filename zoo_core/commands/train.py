"""zoo train [CONFIG|RUN_DIR] [key=value ...] [--nproc N] [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]"""
import subprocess
import sys

from zoo_core.cli import split_config
from zoo_core.errors import UserError


def torchrun_command(args, config, overrides):
    """The torchrun line `zoo train --nproc N` runs: the same loop, one process per device."""
    # SIGUSR1 is forwarded too (torchrun's default list lacks it): it means "checkpoint and stop".
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={args.nproc}",
           "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"]
    if args.nnodes > 1:
        if not args.rdzv_endpoint:
            raise UserError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (a host every node reaches, e.g. node 0)")
        cmd += [f"--nnodes={args.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={args.rdzv_endpoint}",
                f"--rdzv-id={args.rdzv_id}"]
        if args.node_rank is not None:
            cmd.append(f"--node-rank={args.node_rank}")
    else:
        cmd.append("--standalone")  # a free local port: several jobs can share a machine
    return cmd + ["-m", "zoo_core.train"] + ([config] if config else []) + overrides


def run(args) -> None:
    config, overrides = split_config(args.args)
    if args.nproc < 0 or args.nnodes < 1:
        raise UserError("--nproc and --nnodes must be positive")
    if args.nproc > 1 or args.nnodes > 1:
        code = subprocess.call(torchrun_command(args, config, overrides))
        if code:
            raise SystemExit(code)
        return
    from zoo_core.train import train
    train(config, overrides)


def add_parser(sub) -> None:
    s = sub.add_parser("train", help="train: zoo train [CONFIG|RUN_DIR] [key=value ...]")
    s.add_argument("--nproc", type=int, default=1, help="processes on this machine, one per GPU (launches torchrun)")
    s.add_argument("--nnodes", type=int, default=1, help="machines taking part (multi-node, via torchrun's c10d rendezvous)")
    s.add_argument("--node-rank", type=int, default=None, help="this machine's index, 0..nnodes-1")
    s.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT of the rendezvous, the same on every node")
    s.add_argument("--rdzv-id", default="zoo", help="a job id shared by the nodes of one run")
    s.add_argument("args", nargs="*", help="a YAML config or run directory, then key=value overrides")
    s.set_defaults(fn=run)
