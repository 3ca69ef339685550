"""The Slurm task (`zoo_core.launch.TrainTask`) on preemption, without Slurm: the task runs under
submitit's LocalExecutor, which starts it through submitit's own job entry point (with submitit's
signal handlers installed, as on a Slurm node), two tasks as two gloo ranks. A preemption signal to
a task (SIGUSR2: submitit's; SIGTERM: Slurm's) stops both ranks after the same step with one
checkpoint, and rank 0 says where to resume (docs/guarantees.md, docs/launch.md)."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit", reason="zoo launch needs submitit (pip install 'zoo-core[slurm]')")

from zoo_core import checkpoint  # noqa: E402

pytestmark = pytest.mark.slow

RUN = [
    "model.dim=32",
    "model.n_layers=2",
    "data.seq_len=32",
    "train.global_batch=4",
    "train.steps=400",
    "train.ckpt_every=0",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.eval_batch_size=4",
    "train.sample_tokens=0",
    "train.progress=false",
    "train.log_every=1",
    "optim.warmup_steps=1",
    "train.threads=1",
]


def steps(run):
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]


def tasks(controller):
    """{rank: pid} of the submitit tasks the local controller started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == controller:
            for var in environ:
                if var.startswith(b"SUBMITIT_LOCAL_GLOBALID="):
                    found[int(var.split(b"=", 1)[1])] = int(entry.name)
    return found


def torch_loaded(pid):
    try:
        return b"libtorch" in (Path("/proc") / str(pid) / "maps").read_bytes()
    except OSError:
        return False


@pytest.mark.parametrize(
    "sig,to,early", [(signal.SIGUSR2, [1], False), (signal.SIGTERM, [0, 1], False), (signal.SIGUSR2, [1], True)]
)
def test_preemption_signal_to_a_task_saves_one_checkpoint_on_both_ranks(sig, to, early, tmp_path, monkeypatch):
    """early: the signal comes while the task imports torch (zoo's handler is set by then); it is kept,
    and both ranks stop after the first step."""
    from zoo_core.config import resolve
    from zoo_core.launch import TrainTask, prepare_run
    from zoo_core.registry import get_registry
    from zoo_core.train import run_config

    for k, v in {"ZOO_DISABLE_PLUGIN_AUTOLOAD": "1", "ZOO_PLUGINS": "attention", "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(k, v)  # the tasks inherit this environment (submitit picks MASTER_PORT from the job id)
    cfg = resolve(run_config(None, [f"runs_dir={tmp_path}", "name=s"] + RUN), get_registry())
    run = prepare_run(cfg, snapshot=False)
    executor = submitit.LocalExecutor(folder=str(tmp_path / "slurm"))
    executor.update_parameters(tasks_per_node=2, nodes=1, timeout_min=10)
    job = executor.submit(TrainTask(str(run), requeue=False))
    try:
        deadline = time.time() + 240
        if early:
            while (
                not (len(pids := tasks(job._process.pid)) == 2 and all(map(torch_loaded, pids.values())))
                and not job.done()
                and time.time() < deadline
            ):
                time.sleep(0.005)
            assert steps(run) == [], "training started before the signal"
        while not early and len(steps(run)) < 2 and not job.done() and time.time() < deadline:
            time.sleep(0.05)
        pids = tasks(job._process.pid)
        assert sorted(pids) == [0, 1], (pids, job.state, job.stderr())
        for rank in to:
            os.kill(pids[rank], sig)
        results = job.results()  # waits; raises if a task failed
    finally:
        if not job.done():
            job.cancel()
    stopped = max(steps(run))
    assert [r["step"] for r in results] == [stopped, stopped] and all(r["interrupted"] for r in results)
    assert stopped == 1 if early else stopped < 400
    latest = checkpoint.latest(run / "checkpoints")
    assert latest.name == f"step-{stopped:08d}"
    assert {p.name for p in latest.glob("extra-r*.json")} == {"extra-r0.json", "extra-r1.json"}
    assert checkpoint.read_meta(latest)["world_size"] == 2
    line = f"zoo: preempted: stopped by signal at step {stopped}"
    assert line in job.stderr(), job.stderr()[-3000:]
    if 0 in to:
        assert f"({sig.name})" in job.stderr()
