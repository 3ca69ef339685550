"""zoo train [CONFIG|RUN_DIR] [key=value ...] [--nproc N] [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]

Options and overrides may come in any order. Exit status: 0 done (or already
finished), 1 failed (diverged, disk fault), 2 bad input, 75 preempted with a
checkpoint saved (run the same command again to resume), or stopped by SIGTERM/SIGUSR1/SIGUSR2
before training started (nothing saved: the same command starts the run as it would have).
"""

from zoo_core.cli import split_config
from zoo_core.errors import UserError


def torchrun_command(args, config, overrides):
    """The torchrun line `zoo train --nproc N` runs: the same loop, one process per device."""
    from zoo_core.launch import torchrun_command as build

    return build(
        args.nproc,
        "zoo_core.train",
        ([config] if config else []) + list(overrides),
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id,
    )


def run(args) -> None:
    from zoo_core.commands.config import precheck

    config, overrides = split_config(args.args)
    precheck(config, overrides)  # a typo in a key or value answers before torch is imported
    if args.nproc < 1 or args.nnodes < 1:
        raise UserError(f"--nproc ({args.nproc}) and --nnodes ({args.nnodes}) must be at least 1")
    if args.nproc > 1 or args.nnodes > 1:
        from zoo_core.config import resolve
        from zoo_core.launch import run_torchrun
        from zoo_core.loop.train import run_config
        from zoo_core.loop.validate import check_request
        from zoo_core.registry import get_registry

        # The whole request is checked here, once, before any rank starts.
        cfg = resolve(run_config(config, overrides), get_registry())
        check_request(cfg, get_registry(), args.nproc * args.nnodes)
        from pathlib import Path

        from zoo_core.loop.runs import check_run_dir

        check_run_dir(Path(cfg.runs_dir) / cfg.name)
        code = run_torchrun(torchrun_command(args, config, overrides))
        if code:
            raise SystemExit(code)
        return
    # From here on a preemption signal ends in one line and exit 75, even while torch is
    # imported (train() and then the loop install their own handlers).
    import signal

    from zoo_core.errors import stop_before_start

    before = {sig: signal.signal(sig, stop_before_start) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    try:
        from zoo_core.loop.train import train_cli

        train_cli(config, overrides)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def add_parser(sub) -> None:
    s = sub.add_parser(
        "train",
        help="train: zoo train [CONFIG|RUN_DIR] [key=value ...]",
        epilog="Every key with its type, default, range and doc: zoo config --options [PREFIX]; "
        "the resolved config without training: zoo config [CONFIG] [key=value ...]",
    )
    s.add_argument("--nproc", type=int, default=1, help="processes on this machine, one per GPU (launches torchrun)")
    s.add_argument(
        "--nnodes", type=int, default=1, help="machines taking part (multi-node, via torchrun's c10d rendezvous)"
    )
    s.add_argument("--node-rank", type=int, default=None, help="this machine's index, 0..nnodes-1")
    s.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT of the rendezvous, the same on every node")
    s.add_argument("--rdzv-id", default="zoo", help="a job id shared by the nodes of one run")
    s.add_argument("args", nargs="*", help="a YAML config or run directory, then key=value overrides")
    s.set_defaults(fn=run)
