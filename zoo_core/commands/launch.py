"""zoo launch CONFIG [overrides] --nodes N --gpus-per-node G [--partition P] [--local] [--sweep FILE]"""

from pathlib import Path

from zoo_core.cli import split_config


def run(args) -> None:
    from zoo_core.config import parse_overrides, read_yaml, resolve
    from zoo_core.errors import UserError
    from zoo_core.launch import launch_local, submit, sweep_configs
    from zoo_core.loop.runs import check_run_dir
    from zoo_core.loop.train import run_config
    from zoo_core.loop.validate import check_request
    from zoo_core.registry import get_registry

    config, overrides = split_config(args.args)
    registry = get_registry()
    cfg = resolve(run_config(config, overrides), registry)
    array = None
    if args.sweep:
        layers = ([read_yaml(config)] if config and not Path(config).is_dir() else []) + [parse_overrides(overrides)]
        array = sweep_configs(layers, args.sweep, registry)
    # Everything is checked before prepare_run writes config.yaml or the code snapshot.
    if args.local:
        nproc = args.nproc or args.gpus_per_node or args.tasks_per_node or 1
        runs = array or [cfg]
        for c in runs:
            check_request(c, registry, nproc)
            check_run_dir(Path(c.runs_dir) / c.name)
        if not array:
            code = launch_local(cfg, nproc)
            if code:
                raise SystemExit(code)
            return
        code = sweep_locally(runs, lambda c: launch_local(c, nproc))
        if code:
            raise SystemExit(code)
        return
    for name in ("nodes", "time"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("gpus_per_node", "tasks_per_node", "cpus_per_task"):
        if (getattr(args, name) or 0) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    world = args.nodes * (args.tasks_per_node or max(args.gpus_per_node, 1))
    for c in array or [cfg]:
        check_request(c, registry, world, memory=False)  # each rank checks the fit on its own node
        check_run_dir(Path(c.runs_dir) / c.name)
    bad = [kv for kv in args.slurm if "=" not in kv]
    if bad:
        raise UserError(f"--slurm {bad[0]} is not KEY=VALUE; write it like --slurm account=myproject")
    extra = dict(kv.split("=", 1) for kv in args.slurm) if args.slurm else {}
    ids = submit(
        cfg,
        args.nodes,
        args.gpus_per_node,
        args.tasks_per_node,
        args.partition,
        args.time,
        args.cpus_per_task,
        array,
        extra,
        requeue=not args.no_requeue,
    )
    for job_id in ids:
        print(job_id)


def sweep_locally(runs, launch) -> int:
    """Run a sweep's runs one after another (`launch(cfg)` returns the exit status); the first that
    fails stops the sweep with its status (the same command resumes it). Progress as train, eval
    and compare show it: on a terminal a bar on stderr; off one (a Slurm log, `> log.txt`) a
    timestamped line as each run starts and ends, with the runs started, finished and failed so far,
    the elapsed time and, once a run has finished, an estimate of the time left."""
    import time

    from zoo_core.loop.metrics import duration, lines_wanted, log_line, progress_bar

    n, done, began = len(runs), 0, time.perf_counter()
    lines = lines_wanted()

    def counts(started: int, failed: int) -> str:
        elapsed = time.perf_counter() - began
        eta = f" eta {duration(elapsed / done * (n - done))}" if done and not failed else ""
        return f"(started {started}, finished {done}, failed {failed} of {n}) elapsed {duration(elapsed)}{eta}"

    with progress_bar(total=n, desc="sweep", unit="run") as bar:
        for i, c in enumerate(runs):
            what = f"sweep run {i + 1} of {n}: {Path(c.runs_dir) / c.name}"
            if lines:
                log_line(f"{what} started {counts(i + 1, 0)}")
            else:
                bar.write(what)
            code = launch(c)
            if code:
                if lines:
                    log_line(f"{what} failed with exit status {code} {counts(i + 1, 1)}; the sweep stops here")
                return code
            done += 1
            bar.update(1)
            if lines:
                log_line(f"{what} finished {counts(i + 1, 0)}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("launch", help="submit a run to Slurm through submitit (or --local through torchrun)")
    s.add_argument("args", nargs="*", help="a YAML config or run directory, then key=value overrides")
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--gpus-per-node", type=int, default=0)
    s.add_argument("--tasks-per-node", type=int, default=None, help="tasks per node (default: one per GPU)")
    s.add_argument("--cpus-per-task", type=int, default=None)
    s.add_argument("--partition", default=None)
    s.add_argument("--time", type=int, default=60, help="time limit in minutes")
    s.add_argument("--sweep", default=None, help="YAML list of override sets: one run each, as a job array")
    s.add_argument("--slurm", action="append", default=[], help="extra sbatch option KEY=VALUE (repeatable)")
    s.add_argument("--no-requeue", action="store_true", help="on preemption, checkpoint and stop instead of requeueing")
    s.add_argument("--local", action="store_true", help="run the same launch here through torchrun")
    s.add_argument("--nproc", type=int, default=0, help="with --local: processes (default: GPUs or tasks per node)")
    s.set_defaults(fn=run)
