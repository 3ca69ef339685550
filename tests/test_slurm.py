"""`zoo launch` against a real one-node Slurm cluster (tests/slurm/start-cluster.sh; CI starts it).

Skips with the reason when no cluster is reachable; CI starts one, so there it runs."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit", reason="zoo launch needs submitit (pip install 'zoo-core[slurm]')")


def cluster_up() -> str:
    if not shutil.which("sinfo"):
        return "Slurm is not installed (run tests/slurm/start-cluster.sh as root)"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if r.returncode != 0 or not any(s in r.stdout for s in ("idle", "mix", "alloc")):
        return "no Slurm node is up (run tests/slurm/start-cluster.sh as root)"
    return ""


pytestmark = pytest.mark.skipif(bool(cluster_up()), reason=cluster_up() or "ok")

TINY = [
    "model.dim=32",
    "model.n_layers=2",
    "data.seq_len=32",
    "train.global_batch=4",
    "train.eval_every=0",
    "train.sample_tokens=0",
    "train.progress=false",
    "train.log_every=1",
    "optim.warmup_steps=2",
]


def launch(tmp_path, *args):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo_core.cli",
            "launch",
            f"runs_dir={tmp_path}",
            *TINY,
            *args,
            "--tasks-per-node",
            "2",
            "--time",
            "10",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.split()[-1]


def wait_gone(job: str, timeout: float = 600) -> None:
    end = time.time() + timeout
    while time.time() < end:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(1)
    subprocess.run(["scancel", job])
    pytest.fail(f"job {job} did not finish in {timeout}s")


def wait_for(predicate, timeout: float = 600) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail("timed out waiting")


def steps(run: Path):
    return [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


def logs(run: Path) -> str:
    return "".join(p.read_text() for p in sorted((run / "slurm").rglob("*_log.*")))


def test_two_task_job_trains_with_per_rank_logs_and_checkpoint(tmp_path):
    job = launch(tmp_path, "name=ok", "train.steps=12", "train.ckpt_every=6")
    wait_gone(job)
    run = tmp_path / "ok"
    assert steps(run) == list(range(1, 13))
    assert (run / "checkpoints" / "step-00000012").is_dir()
    assert (run / "config.yaml").exists() and (run / "code" / "zoo_core" / "loop" / "train.py").exists()
    rank_logs = sorted(p.name for p in (run / "slurm").rglob("*_log.out"))
    assert len(rank_logs) == 2, rank_logs  # one per task
    assert "val bits/byte" in logs(run)


def test_preempted_job_checkpoints_and_resubmission_resumes(tmp_path):
    run = tmp_path / "pre"
    args = ["name=pre", "train.steps=200", "train.ckpt_every=10"]
    job = launch(tmp_path, *args, "--no-requeue")
    wait_for(lambda: (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step-*")))
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    wait_gone(job)
    assert "stopped by signal at step" in logs(run)
    stopped = max(steps(run))
    assert 0 < stopped < 200
    job2 = launch(tmp_path, *args)
    wait_gone(job2)
    assert f"from step {stopped}" in logs(run)
    assert steps(run) == list(range(1, 201))  # one run, no step lost or repeated


def test_preemption_requeues_the_job_itself(tmp_path):
    run = tmp_path / "rq"
    job = launch(tmp_path, "name=rq", "train.steps=200", "train.ckpt_every=10")
    wait_for(lambda: (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step-*")))
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    wait_gone(job)
    text = logs(run)
    assert "stopped by signal at step" in text and "resumed" in text
    assert steps(run) == list(range(1, 201))
