"""Cluster launch through submitit (Slurm), or the same launch through torchrun locally.

`zoo launch CONFIG [overrides] --nodes N --gpus-per-node G` resolves and saves
the config, snapshots the code into the run directory, and submits one task per
GPU. Each task exports the environment torch.distributed expects and runs the
one training loop. On the preemption signal (SIGUSR1, which sbatch is asked to
send before the time limit, or `scancel --signal=USR1`), the loop checkpoints
and the job requeues itself; submitting the same run again resumes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from zoo_core.config import resolve, save_config
from zoo_core.errors import EXIT_FAILED, EXIT_PREEMPTED, UserError
from zoo_core.loop.paths import anchored
from zoo_core.registry import get_registry

PREEMPT_SIGNAL = "USR1"
#: Signals torchrun forwards to its workers. SIGUSR1 is not in torchrun's default list;
#: the loop reads SIGTERM, SIGINT and SIGUSR1 as "checkpoint and stop".
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
#: What a Slurm task reads as "checkpoint and stop": SIGUSR1 (sbatch's warning before the time
#: limit, asked for below), SIGUSR2 (submitit's preemption/timeout signal), SIGTERM (Slurm's own
#: on preemption, scancel and the time limit).
TASK_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
from zoo_core.errors import STATUS_ENV  # noqa: E402  (set for the workers by run_torchrun)


def torchrun_command(
    nproc: int,
    module: str,
    module_args: Sequence[str],
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "zoo",
) -> list[str]:
    """The one torchrun command line, for `zoo train --nproc`, `zoo launch --local` and `zoo eval --nproc`.

    (Slurm runs one task per GPU through submitit instead, and Slurm itself signals every task.)"""
    if nproc < 1 or nnodes < 1:
        raise UserError(f"--nproc ({nproc}) and --nnodes ({nnodes}) must be at least 1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        f"--signals-to-handle={FORWARDED_SIGNALS}",
    ]
    if nnodes > 1:
        if not rdzv_endpoint:
            raise UserError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (a host every node reaches, e.g. node 0)")
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
        if node_rank is not None:
            cmd.append(f"--node-rank={node_rank}")
    else:
        cmd.append("--standalone")  # a free local port: several jobs can share a machine
    return cmd + ["-m", module] + list(module_args)


def run_torchrun(cmd: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run a `torchrun_command` line in this process, so that a signal sent to `zoo` is a
    signal to torchrun, which forwards it to every rank and waits for them to save
    (for up to TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds, 30 by default). Returns the exit status:
    0, EXIT_PREEMPTED when the ranks stopped on a signal with a checkpoint, or the
    failing rank's status (its own one-line message is already printed)."""
    import logging
    import tempfile

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    cmd = list(cmd)
    assert cmd[1:3] == ["-m", "torch.distributed.run"], cmd
    with tempfile.TemporaryDirectory(prefix="zoo-launch-") as tmp:
        status = Path(tmp) / "status.json"
        saved_env = dict(os.environ)
        os.environ.update(env or {})
        os.environ[STATUS_ENV] = str(status)
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets anyway, without its banner
        # torchrun's "shutting down workers" and similar lines: the ranks say what happened, in one line.
        quiet = [
            logging.getLogger(n)
            for n in ["torch.distributed"] + list(logging.root.manager.loggerDict)
            if n.startswith("torch.distributed")
        ]
        levels = [q.level for q in quiet]
        for q in quiet:
            q.setLevel(logging.CRITICAL)
        handlers = {s: signal.getsignal(s) for s in _signals(FORWARDED_SIGNALS)}
        code, got_signal = 0, None
        try:
            torchrun.main(cmd[3:])
        except SignalException as exc:
            got_signal = exc.sigval
        except ChildFailedError as exc:
            rank, failure = exc.get_first_failure()
            code = failure.exitcode if failure.exitcode and failure.exitcode > 0 else EXIT_FAILED
            if failure.exitcode and failure.exitcode < 0:
                print(
                    f"zoo: rank {rank} was killed by signal {-failure.exitcode}; the previous checkpoint is "
                    f"intact, run the same command again to resume",
                    file=sys.stderr,
                )
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_FAILED
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            for q, lvl in zip(quiet, levels):
                q.setLevel(lvl)
            for s, h in handlers.items():
                signal.signal(s, h)
        if status.exists() and json.loads(status.read_text()).get("preempted"):
            return EXIT_PREEMPTED
        if got_signal is not None:
            print(
                f"zoo: stopped by {signal.Signals(got_signal).name} before the ranks saved a checkpoint; "
                f"the previous checkpoint is intact, run the same command again to resume",
                file=sys.stderr,
            )
            return 128 + int(got_signal)
        return code


def _signals(names: str) -> list[signal.Signals]:
    return [getattr(signal, n) for n in names.split(",")]


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("zoo launch needs submitit: pip install 'zoo-core[slurm]'") from None
    return submitit


class TrainTask:
    """What each Slurm task runs: the training loop on the saved run directory.

    A plain class (pickled by submitit) so a requeued job runs it again and resumes."""

    def __init__(self, run_dir: str, requeue: bool = True) -> None:
        self.run_dir, self.requeue = run_dir, requeue

    def __call__(self) -> dict[str, Any]:
        # submitit's own handlers would requeue rank 0 without saving (SIGUSR2, its preemption
        # and timeout signal) and ignore SIGTERM (what Slurm sends on preemption and at the time
        # limit). Here every one of them takes the loop's path instead, on every task: kept until
        # the loop runs, then each rank stops after the same step and saves its part of one checkpoint.
        from zoo_core.errors import early_signal, keep_for_the_loop

        early_signal.clear()
        before = {sig: signal.signal(sig, keep_for_the_loop) for sig in TASK_SIGNALS}
        try:
            submitit = _submitit()
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            from zoo_core.loop.train import train

            result = train(self.run_dir, [])
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)
        if result.get("interrupted") and self.requeue and os.environ.get("RANK", "0") == "0":
            job = (
                os.environ.get("SLURM_ARRAY_JOB_ID")
                and f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
                or os.environ.get("SLURM_JOB_ID")
            )
            if job:
                subprocess.run(["scontrol", "requeue", job], check=False)
        return {k: v for k, v in result.items() if k != "sample"}


def run_task(run_dir: str) -> dict[str, Any]:
    """One element of a job array."""
    return TrainTask(run_dir)()


def prepare_run(cfg: Any, snapshot: bool = True) -> Path:
    """Save the resolved config and a snapshot of the code into the run directory."""
    run_dir = Path(cfg.runs_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(anchored(cfg), run_dir / "config.yaml")  # data paths absolute, as zoo train records them
    if snapshot:
        snapshot_code(run_dir / "code")
    return run_dir


def snapshot_code(dest: Path) -> None:
    """Copy zoo-core and every loaded plugin's package, so edits made after
    submission do not change a queued job (the job puts this first on PYTHONPATH)."""
    import importlib

    if dest.exists():  # a resubmission keeps the code the run started with
        return
    dest.mkdir(parents=True)
    reg = get_registry()
    packages = {"zoo_core": "zoo-core"}
    for name, info in reg.plugins.items():
        module = reg.pm.get_plugin(name)
        if module is not None and hasattr(module, "__name__"):
            packages[module.__name__.split(".")[0]] = info.distribution
    manifest = {}
    for package, dist in sorted(packages.items()):
        mod = importlib.import_module(package)
        src = Path(mod.__file__).parent
        shutil.copytree(src, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        manifest[package] = dist
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))


def submit(
    cfg: Any,
    nodes: int,
    gpus_per_node: int,
    tasks_per_node: int | None = None,
    partition: str | None = None,
    time_min: int = 60,
    cpus_per_task: int | None = None,
    array: list[Any] | None = None,
    extra: dict[str, Any] | None = None,
    requeue: bool = True,
) -> list[str]:
    """Submit the run (or one run per config in `array`, as a job array). Returns job ids."""
    submitit = _submitit()
    cfgs = array or [cfg]
    run_dirs = [prepare_run(c) for c in cfgs]
    folder = run_dirs[0].parent / ".slurm" if array else run_dirs[0] / "slurm"
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=100)
    tasks = tasks_per_node or max(gpus_per_node, 1)
    params: dict[str, Any] = dict(
        nodes=nodes,
        ntasks_per_node=tasks,
        time=time_min,
        signal_delay_s=120,
        stderr_to_stdout=False,
        job_name=f"zoo-{cfg.name}",
        additional_parameters=dict(extra or {}),
    )
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    if partition:
        params["partition"] = partition
    if cpus_per_task:
        params["cpus_per_task"] = cpus_per_task
    # Our loop checkpoints on SIGUSR1; ask Slurm for it before the time limit.
    params["additional_parameters"]["signal"] = f"{PREEMPT_SIGNAL}@120"
    if requeue:
        params["additional_parameters"].setdefault("requeue", True)
    code_dirs = [str(d / "code") for d in run_dirs]
    params["setup"] = [f"export PYTHONPATH={code_dirs[0]}${{PYTHONPATH:+:$PYTHONPATH}}"]
    executor.update_parameters(**params)
    if array:
        jobs = executor.map_array(run_task, [str(d) for d in run_dirs])
    else:
        jobs = [executor.submit(TrainTask(str(run_dirs[0]), requeue=requeue))]
    return [j.job_id for j in jobs]


def launch_local(cfg: Any, nproc: int) -> int:
    """The same launch on this machine: torchrun, one process per device."""
    cmd = torchrun_command(max(nproc, 1), "zoo_core.train", [str(Path(cfg.runs_dir) / cfg.name)])
    run_dir = prepare_run(cfg)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(run_dir / "code"), os.environ.get("PYTHONPATH")]))}
    return run_torchrun(cmd, env)


def sweep_configs(cfg_layers: Any, sweep_file: str, registry: Any) -> list[Any]:
    """A YAML list of override sets -> one resolved config per set, named <name>-<i> unless it sets a name."""
    from zoo_core.config import merge, parse_overrides

    if not Path(sweep_file).is_file():
        raise UserError(f"sweep file '{sweep_file}' does not exist; give a YAML list of override sets")
    try:
        data = OmegaConf.load(sweep_file)
    except Exception as exc:
        raise UserError(f"sweep file '{sweep_file}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, (list,)) and not OmegaConf.is_list(data):
        raise UserError(f"sweep file '{sweep_file}' must be a YAML list of override sets, e.g. - [optim.lr=1e-3]")
    out = []
    for i, item in enumerate(data):
        items = OmegaConf.to_container(item) if OmegaConf.is_config(item) else item
        if not isinstance(items, (list, dict)):
            raise UserError(
                f"sweep file '{sweep_file}' entry {i} is {items!r}; each entry is a list of "
                f"key=value overrides or a mapping, e.g. - [optim.lr=1e-3]"
            )
        overrides = [str(o) for o in items] if isinstance(items, list) else [f"{k}={v}" for k, v in items.items()]
        cfg = merge(cfg_layers + [parse_overrides(overrides)])
        if not any(str(o).startswith("name=") for o in overrides):
            cfg.name = f"{cfg.name}-{i}"
        out.append(resolve(cfg, registry))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m zoo_core.launch [torchrun options] -m zoo_core.train ...`: torchrun itself, with
    zoo's signal handling: the signals are forwarded (SIGUSR1 too), and a stop on a signal exits
    EXIT_PREEMPTED (75) with no traceback. `zoo train --nproc N` runs the same thing."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith(("--signals-to-handle", "--signals_to_handle")) for a in argv):
        argv.insert(0, f"--signals-to-handle={FORWARDED_SIGNALS}")
    return run_torchrun([sys.executable, "-m", "torch.distributed.run"] + argv)
