"""Signals to `zoo`, to zoo's torchrun launcher and a kill -9 of the launcher, at 1 and 2 ranks
(docs/guarantees.md): every rank saves one consistent checkpoint, no process is left behind,
one line says where to resume, the exit status is 75 ("preempted"), and the run resumes.

Small runs on gloo; each launch takes a few seconds of imports and rendezvous, so cases that
can share one are observed on the same runs: the module-scoped fixtures below run one scenario
(launches in sequence on one run directory, each stopped by a different signal) and record
each launch; the tests named in docs/guarantees.md assert on their launch.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo_core import checkpoint
from zoo_core.errors import EXIT_PREEMPTED

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


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e["ZOO_CACHE"] = str(tmp_path_factory.getbasetemp().parent / "zoo-cache")  # as conftest.py
    e["ZOO_DISABLE_PLUGIN_AUTOLOAD"], e["ZOO_PLUGINS"] = "1", "attention"
    e["OMP_NUM_THREADS"] = "1"
    return e


def steps(run):
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]


def children(pid):
    """Every live descendant of pid."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == parent and int(entry.name) not in found:
                    found.add(int(entry.name))
                    todo.append(int(entry.name))
    return found


def alive(pid):
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def start_and_wait(cmd, env, run, nproc, until=2):
    """Start cmd and wait until the run has logged `until` steps (in all, earlier launches included)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(steps(run)) < until and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    workers = children(proc.pid) if nproc > 1 else set()
    return proc, workers


def stop(proc, run, workers, timeout=120):
    """Wait for a signalled launch to end; what the checks below need, recorded at once."""
    out, err = proc.communicate(timeout=timeout)
    time.sleep(0.5)
    logged = steps(run)
    metrics = Path(run) / "metrics.jsonl"
    latest = checkpoint.latest(Path(run) / "checkpoints")
    return {
        "run": Path(run),
        "returncode": proc.returncode,
        "err": err,
        "steps": logged,
        "metrics": metrics.read_text() if metrics.exists() else "",
        "left_running": [w for w in workers if alive(w)],
        "latest": latest,
        "extras": {p.name for p in latest.glob("extra-r*.json")} if latest else set(),
        "world_size": checkpoint.read_meta(latest)["world_size"] if latest else None,
    }


def assert_preempted(launch, nproc):
    err = launch["err"]
    lines = [line for line in err.splitlines() if line.strip()]
    assert launch["returncode"] == EXIT_PREEMPTED, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    stopped = max(launch["steps"])
    assert launch["latest"].name == f"step-{stopped:08d}"
    assert f"stopped by signal at step {stopped}" in lines[0] and f"zoo train {launch['run']}" in lines[0]
    assert launch["extras"] == {f"extra-r{r}.json" for r in range(nproc)}
    assert launch["world_size"] == nproc
    assert not launch["left_running"], "a rank was left running"
    return stopped


def zoo(*args):
    return [sys.executable, "-m", "zoo_core.cli", *args]


@pytest.fixture(scope="module")
def launcher_runs(env, tmp_path_factory):
    """SIGUSR1 to `python -m zoo_core.launch` (2 ranks), then the same run resumed by
    `zoo train RUN --nproc 2` and stopped by SIGTERM to `zoo`: one record per launch."""
    root = tmp_path_factory.mktemp("launcher")
    run = root / "p"
    cmd = [
        sys.executable,
        "-m",
        "zoo_core.launch",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "zoo_core.train",
        f"runs_dir={root}",
        "name=p",
        *RUN,
    ]
    proc, workers = start_and_wait(cmd, env, run, 2)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGUSR1)
    first = stop(proc, run, workers)
    done = {"launch": first}
    if first["returncode"] == EXIT_PREEMPTED and first["steps"]:
        proc, workers = start_and_wait(
            zoo("train", str(run), "--nproc", "2"), env, run, 2, until=len(first["steps"]) + 2
        )
        assert len(workers) >= 2
        proc.send_signal(signal.SIGTERM)
        done["zoo"] = stop(proc, run, workers)
    return done


@pytest.mark.parametrize(
    "launcher,sig", [("zoo", signal.SIGTERM), ("launch", signal.SIGUSR1)], ids=["zoo-SIGTERM", "launch-SIGUSR1"]
)  # as docs/guarantees.md names them
def test_signal_to_the_launcher_stops_both_ranks_with_one_checkpoint(launcher, sig, launcher_runs):
    """launch-SIGUSR1: a fresh run under `python -m zoo_core.launch`. zoo-SIGTERM: `zoo train --nproc 2`
    resuming that run; it went on from the checkpoint (the first launch's records kept as they were,
    tokens_per_s included) and logged every step once."""
    assert launcher in launcher_runs, "the first launch did not stop preempted (see launch-SIGUSR1)"
    stopped = assert_preempted(launcher_runs[launcher], 2)
    if launcher == "zoo":
        first = max(launcher_runs["launch"]["steps"])
        assert stopped >= first + 2 and launcher_runs["zoo"]["steps"] == list(range(1, stopped + 1))
        assert launcher_runs["zoo"]["metrics"].startswith(launcher_runs["launch"]["metrics"]), "not resumed"


def test_signal_to_a_bare_torchrun_saves_and_torchrun_exits_1(env, tmp_path):
    """torchrun's own behaviour, as docs/guarantees.md states it: the ranks save and exit 0, torchrun
    raises its SignalException (exit 1); `python -m zoo_core.launch` is what exits 75."""
    run = tmp_path / "t"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "zoo_core.train",
        f"runs_dir={tmp_path}",
        "name=t",
        *RUN,
    ]
    proc, workers = start_and_wait(cmd, env, run, 2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    stopped = max(steps(run))
    assert f"stopped by signal at step {stopped}" in err
    latest = checkpoint.latest(run / "checkpoints")
    assert latest.name == f"step-{stopped:08d}"
    assert {p.name for p in latest.glob("extra-r*.json")} == {"extra-r0.json", "extra-r1.json"}
    time.sleep(0.5)
    assert not [w for w in workers if alive(w)], "a rank was left running"


def signal_before_training(cmd, env, sig):
    """Send sig once the process maps libtorch (torch is being imported: the loop is seconds away)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = Path("/proc") / str(proc.pid) / "maps"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and b"libtorch" not in maps.read_bytes():
        time.sleep(0.005)
    proc.send_signal(sig)
    return proc


@pytest.fixture(scope="module")
def early_then_ctrl_c(env, tmp_path_factory):
    """`zoo train` stopped by SIGTERM before training starts, then the same command again, stopped
    by Ctrl-C (SIGINT) once it trains: one record per launch."""
    root = tmp_path_factory.mktemp("early")
    run = root / "e"
    cmd = zoo("train", f"runs_dir={root}", "name=e", *RUN)
    early = stop(signal_before_training(cmd, env, signal.SIGTERM), run, set())
    proc, _ = start_and_wait(cmd, env, run, 1)
    proc.send_signal(signal.SIGINT)
    return {"early": early, "ctrl_c": stop(proc, run, set())}


def assert_stopped_before_training(launch, sig):
    err = launch["err"]
    lines = [line for line in err.splitlines() if line.strip()]
    assert launch["returncode"] == EXIT_PREEMPTED, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert f"stopped by {sig.name} before training started" in lines[0] and "nothing was saved" in lines[0]
    assert launch["steps"] == [] and launch["latest"] is None


def test_ctrl_c_to_one_process_saves_and_exits_preempted(early_then_ctrl_c):
    assert_preempted(early_then_ctrl_c["ctrl_c"], 1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_preemption_before_training_starts_is_one_line_and_changes_nothing(sig, env, tmp_path, early_then_ctrl_c):
    """SIGTERM/SIGUSR1 while `zoo train` imports torch and builds the run: exit 75, one line, no
    checkpoint, no logged step; the same command then starts the run as it would have (SIGTERM:
    the second launch of `early_then_ctrl_c` logged from step 1)."""
    if sig == signal.SIGTERM:
        assert_stopped_before_training(early_then_ctrl_c["early"], sig)
        assert early_then_ctrl_c["ctrl_c"]["steps"][:2] == [1, 2], early_then_ctrl_c["ctrl_c"]["err"][-3000:]
        return
    run = tmp_path / "e"
    proc = signal_before_training(zoo("train", f"runs_dir={tmp_path}", "name=e", *RUN), env, sig)
    assert_stopped_before_training(stop(proc, run, set()), sig)


def test_kill_9_of_the_launcher_leaves_no_orphan(env, tmp_path):
    """The ranks die with their parent: each gets SIGTERM (PR_SET_PDEATHSIG), saves, and exits."""
    run = tmp_path / "k"
    proc, workers = start_and_wait(zoo("train", "--nproc", "2", f"runs_dir={tmp_path}", "name=k", *RUN), env, run, 2)
    ranks = [w for w in workers if b"zoo_core.train" in (Path("/proc") / str(w) / "cmdline").read_bytes()]
    assert len(ranks) == 2
    proc.kill()
    proc.wait()
    deadline = time.time() + 120
    while any(alive(w) for w in ranks) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in ranks), "ranks outlived their launcher"
    latest = checkpoint.latest(run / "checkpoints")
    assert latest is not None and latest.name == f"step-{max(steps(run)):08d}"
    assert {p.name for p in latest.glob("extra-r*.json")} == {"extra-r0.json", "extra-r1.json"}


def test_kill_9_at_a_random_step_resumes_to_the_same_losses(env, tmp_path):
    """One process, killed with SIGKILL at a step drawn at random (seeded, so a failure reproduces)."""
    import random

    from zoo_core.cli import main

    args = [f"runs_dir={tmp_path}"] + RUN + ["train.steps=8", "train.ckpt_every=2", "train.deterministic=true"]
    assert main(["train", *args, "name=ref"]) == 0
    reference = [
        json.loads(line)["loss"]
        for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    kill_at = random.Random(os.environ.get("ZOO_FAULT_SEED", "21")).randint(1, 7)
    run = tmp_path / "k"
    proc = subprocess.Popen(
        zoo("train", *args, "name=k"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and (not steps(run) or max(steps(run)) < kill_at):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"finished before step {kill_at}"
    done = subprocess.run(zoo("train", str(run)), env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert steps(run) == list(range(1, 9))
    assert [
        json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line
    ] == reference


def test_bad_data_at_2_ranks_is_one_line_and_writes_nothing(env, tmp_path):
    """Rank 0 refuses the corpus while preparing it; rank 1 learns so and stops quietly."""
    r = subprocess.run(
        zoo("train", "--nproc", "2", f"runs_dir={tmp_path}", "name=b", *RUN, "data.source.path=/nonexistent/corpus"),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "/nonexistent/corpus" in lines[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()
