"""Signals to `zoo`, to zoo's torchrun launcher and a kill -9 of the launcher, at 1 and 2 ranks
(docs/guarantees.md): every rank saves one consistent checkpoint, no process is left behind,
one line says where to resume, the exit status is 75 ("preempted"), and the run resumes.

Small runs on gloo; each launch takes a few seconds of imports and rendezvous.
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

RUN = ["model.dim=32", "model.n_layers=2", "data.seq_len=32", "train.global_batch=4", "train.steps=400",
       "train.ckpt_every=0", "train.eval_every=0", "train.eval_batches=1", "train.eval_batch_size=4",
       "train.sample_tokens=0", "train.progress=false", "train.log_every=1", "optim.warmup_steps=1",
       "train.threads=1"]


@pytest.fixture
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


def start_and_wait(cmd, env, run, nproc):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(steps(run)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    workers = children(proc.pid) if nproc > 1 else set()
    return proc, workers


def assert_preempted(proc, run, workers, nproc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    stopped = max(steps(run))
    latest = checkpoint.latest(Path(run) / "checkpoints")
    assert latest.name == f"step-{stopped:08d}"
    assert f"stopped by signal at step {stopped}" in lines[0] and f"zoo train {run}" in lines[0]
    assert {p.name for p in latest.glob("extra-r*.json")} == {f"extra-r{r}.json" for r in range(nproc)}
    assert checkpoint.read_meta(latest)["world_size"] == nproc
    time.sleep(0.5)
    assert not [w for w in workers if alive(w)], "a rank was left running"
    return stopped


def zoo(*args):
    return [sys.executable, "-m", "zoo_core.cli", *args]


@pytest.mark.parametrize("launcher,sig", [("zoo", signal.SIGTERM), ("launch", signal.SIGUSR1)])
def test_signal_to_the_launcher_stops_both_ranks_with_one_checkpoint(launcher, sig, env, tmp_path):
    run = tmp_path / "p"
    args = [f"runs_dir={tmp_path}", "name=p"] + RUN
    cmd = zoo("train", "--nproc", "2", *args) if launcher == "zoo" else \
        [sys.executable, "-m", "zoo_core.launch", "--standalone", "--nproc-per-node=2", "-m", "zoo_core.train", *args]
    proc, workers = start_and_wait(cmd, env, run, 2)
    assert len(workers) >= 2
    proc.send_signal(sig)
    stopped = assert_preempted(proc, run, workers, 2)
    if launcher != "zoo":
        return
    # The same command with more steps resumes: every step logged once.
    done = subprocess.run(zoo("train", str(run), "--nproc", "2", f"train.steps={stopped + 2}"), env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert steps(run) == list(range(1, stopped + 3))


def test_signal_to_a_bare_torchrun_saves_and_torchrun_exits_1(env, tmp_path):
    """torchrun's own behaviour, as docs/guarantees.md states it: the ranks save and exit 0, torchrun
    raises its SignalException (exit 1); `python -m zoo_core.launch` is what exits 75."""
    run = tmp_path / "t"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
           "zoo_core.train", f"runs_dir={tmp_path}", "name=t", *RUN]
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


def test_ctrl_c_to_one_process_saves_and_exits_preempted(env, tmp_path):
    run = tmp_path / "c"
    proc, _ = start_and_wait(zoo("train", f"runs_dir={tmp_path}", "name=c", *RUN), env, run, 1)
    proc.send_signal(signal.SIGINT)
    assert_preempted(proc, run, set(), 1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_before_training_starts_is_one_line_and_changes_nothing(sig, env, tmp_path):
    """SIGTERM/SIGUSR1 while `zoo train` imports torch and builds the run: exit 75, one line, no
    checkpoint, no logged step; the same command then starts the run as it would have."""
    run = tmp_path / "e"
    cmd = zoo("train", f"runs_dir={tmp_path}", "name=e", *RUN)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = Path("/proc") / str(proc.pid) / "maps"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and b"libtorch" not in maps.read_bytes():
        time.sleep(0.005)  # torch is being imported: the loop is seconds away
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert f"stopped by {sig.name} before training started" in lines[0] and "nothing was saved" in lines[0]
    assert steps(run) == [] and checkpoint.latest(run / "checkpoints") is None
    if sig != signal.SIGTERM:
        return
    done = subprocess.run(cmd[:-len(RUN)] + RUN + ["train.steps=2"], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert steps(run) == [1, 2]


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
    reference = [json.loads(line)["loss"] for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
                 if '"loss"' in line]
    kill_at = random.Random(os.environ.get("ZOO_FAULT_SEED", "21")).randint(1, 7)
    run = tmp_path / "k"
    proc = subprocess.Popen(zoo("train", *args, "name=k"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and (not steps(run) or max(steps(run)) < kill_at):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"finished before step {kill_at}"
    done = subprocess.run(zoo("train", str(run)), env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert steps(run) == list(range(1, 9))
    assert [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line] == reference


def test_bad_data_at_2_ranks_is_one_line_and_writes_nothing(env, tmp_path):
    """Rank 0 refuses the corpus while preparing it; rank 1 learns so and stops quietly."""
    r = subprocess.run(zoo("train", "--nproc", "2", f"runs_dir={tmp_path}", "name=b", *RUN,
                           "data.source.path=/nonexistent/corpus"), env=env, capture_output=True, text=True,
                       timeout=240)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "/nonexistent/corpus" in lines[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()
